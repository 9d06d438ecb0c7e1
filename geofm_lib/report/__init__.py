"""Reports: executed notebooks as HTML pages, run records, figures and maps.
"""
