"""The ``geofm`` command: reports, data builds, parameter checks and benchmarks.

    geofm report --preset demo                 # run every notebook, publish reports/
    geofm report --preset ci --experiment group_C -p image_px=48
    geofm data --preset demo                   # build the shards only
    geofm train --preset demo --experiment group_C   # 03's training without the notebook
    torchrun --nproc_per_node 4 -m geofm_lib.cli train --preset full --experiment group_C
    geofm ssl --preset demo --experiment group_A -p ssl_mode=sensor   # 07's MoCo pretraining
    torchrun --nproc_per_node 4 -m geofm_lib.cli ssl --preset full --experiment group_A
    geofm params --preset full --experiment group_C_metadata   # show the resolved set
    geofm study --preset demo                  # seed 000's grouped study, side by side
    geofm study --study seed001 --preset demo  # seed 001: MoCo, DINO, MAE x decoders x protocols
    geofm study --study spectral --preset demo # seed 001: hyperspectral encoders x 3 protocols
    geofm example-corpus                       # a Karpathy-style image-text corpus to try
    geofm bench                                # data-stage benchmarks
    geofm bench-compile [--quick]              # shard compile: workers, bytes per sample
    geofm bench-train [--quick]                # training benchmarks (vs open_clip_train, ...)
    geofm bench-ssl --preset full              # seed 001's SSL and segmentation steps (GPU)
    geofm bench-hyperspectral                  # EnMAP shards: bytes per sample, loader vs step
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from geofm_lib.config import check_runtime, load_config, project_root
from geofm_lib.errors import ConfigError, GeofmError, environment_hint
from geofm_lib.io import parse_yaml_value


def _pairs(groups: list) -> list[tuple[str, str]]:
    """(key, value) of each ``-p``: ``-p key=value`` or papermill's ``-p key value``."""
    out = []
    for group in groups or []:
        words = [group] if isinstance(group, str) else list(group)
        if len(words) == 1 and "=" in words[0]:
            out.append(tuple(words[0].split("=", 1)))
        elif len(words) == 2 and "=" not in words[0]:
            out.append((words[0], words[1]))
        else:
            shown = " ".join(words)
            raise ConfigError(f"-p takes key=value or key value, got -p {shown} (e.g. -p "
                              f"image_px=64 or -p group C; one parameter per -p)")
    return out


def _overrides(groups: list) -> dict:
    """``-p key=value`` (or ``-p key value``) pairs; values are YAML 1.2 (64 -> int, 1e-4 ->
    float, true -> bool, C -> 'C', [a, b] -> list); a key given twice is an error."""
    out = {}
    for key, value in _pairs(groups):
        key = key.strip()
        if key in ("preset", "experiment"):
            raise ConfigError(f"{key} is chosen with --{key}, not with -p: write "
                              f"--{key} {value}")
        if key in out:
            raise ConfigError(f"-p {key}=... is given twice ({out[key]!r} and {value!r}); keep "
                              f"one")
        out[key] = parse_yaml_value(value, f"-p {key}")
    return out


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


# --- arguments ------------------------------------------------------------------------------

def _preset_and_params(p: argparse.ArgumentParser, params_help: str) -> None:
    p.add_argument("--preset", default="demo", help="ci | demo | full (parameters/)")
    p.add_argument("-p", "--param", action="append", nargs="+", metavar=("KEY=VALUE", "VALUE"),
                   help=f"{params_help}: -p key=value or, as papermill takes it, -p key value; "
                        f"`geofm params` lists the keys")


def _run_args(p: argparse.ArgumentParser) -> None:
    """--preset, --experiment and -p: the parameter set of one run."""
    _preset_and_params(p, "override one parameter (repeatable)")
    p.add_argument("--experiment", "--params", default=None, dest="experiment",
                   help="a set of parameters/ (group_A | group_B | group_C | compiled | "
                        "group_C_metadata) or the path of your own YAML file, anywhere")


def _report_args(p: argparse.ArgumentParser) -> None:
    _run_args(p)
    p.add_argument("--notebooks", default=None,
                   help="comma-separated prefixes, e.g. 01,02 (default: all of notebooks/)")
    p.add_argument("--force", action="store_true",
                   help="execute every notebook; by default a notebook whose source, "
                        "parameters, library and inputs are those of its last finished "
                        "execution is not executed again: its page is republished")
    p.add_argument("--jobs", type=int, default=None,
                   help="notebooks executed side by side where the graph allows (default: one "
                        "per two cores; 1: one after another)")


def _study_args(p: argparse.ArgumentParser) -> None:
    _preset_and_params(p, "override one parameter in every run (repeatable)")
    p.add_argument("--study", default="seed000", choices=["seed000", "seed001", "spectral"],
                   help="seed000: CLIP on the resolution groups (study-<preset>.html); seed001: "
                        "MoCo, DINO and MAE for segmentation (study-seed001-<preset>.html); "
                        "spectral: seed 001's hyperspectral encoders under its three "
                        "protocols on group_H (study-spectral-<preset>.html)")
    p.add_argument("--experiments", default=None,
                   help="seed000: comma-separated experiment sets (default: all five)")
    p.add_argument("--methods", default=None,
                   help="seed001 / spectral: comma-separated SSL methods, method or "
                        "method:backbone (default: moco,dino,mae:vit_small_patch16; spectral: "
                        "moco,dino,mae:vit_small_patch8)")


def _corpus_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", nargs="?", default="work/examples/captions",
                   help="output folder (default: work/examples/captions, as "
                        "parameters/captions_example.yaml expects)")
    p.add_argument("--images", type=int, default=1200, help="number of images")
    p.add_argument("--seed", type=int, default=0)


def _bigearthnet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="the root folder to create (source root for dataset_class "
                               "BigEarthNet)")
    p.add_argument("--s2", help="folder of Sentinel-2 patch folders")
    p.add_argument("--s1", help="folder of Sentinel-1 patch folders")
    p.add_argument("--splits", help="folder with the official {train,val,test}.csv[.bz2]")
    p.add_argument("--sensor", default="s2", choices=["s1", "s2", "pairs"])
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the split by product made without --splits")


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="fewer samples (seconds, for CI)")


def _bench_compile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="150 scenes per dataset, not 1000")
    p.add_argument("--repeats", type=int, default=1, help="builds per variant (median)")


def _bench_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="fewer steps and samples (CI)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if present)")
    p.add_argument("--no-openclip", action="store_true", help="skip open_clip_train")
    p.add_argument("--no-ddp", action="store_true", help="skip the torchrun 1-vs-2 runs")
    p.add_argument("--gpu-only", action="store_true",
                   help="only the CUDA figures (skip the CPU comparisons)")
    p.add_argument("--compile", action="store_true",
                   help="CUDA figures: also the torch.compile'd step (minutes of compiling)")


def _bench_ssl_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="full", help="sizes to time at (default: full)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: the preset's)")
    p.add_argument("--methods", default=None,
                   help="comma-separated SSL methods (default: the seed 001 study's)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: the code path only")


def _no_args(p: argparse.ArgumentParser) -> None:
    return None


# --- commands -------------------------------------------------------------------------------
# Each command imports its stage when it runs (deferred on purpose: the stages load torch,
# open_clip and lightning, several seconds, so `geofm --help` and `geofm params` start at once).

def _config(args):
    return load_config(args.preset, args.experiment, **_overrides(args.param))


def _report(args) -> None:
    from geofm_lib.report.reports import run_report

    chain = args.notebooks.split(",") if args.notebooks else None
    folder = run_report(args.preset, args.experiment, chain=chain, force=args.force,
                        jobs=args.jobs, **_overrides(args.param))
    print(f"report: {folder.relative_to(folder.parent.parent)}/ and reports/index.html")


def _data(args) -> None:
    from geofm_lib.data.build import build_shards
    from geofm_lib.data.shards import load_manifest

    cfg = _config(args)
    folder = build_shards(cfg)
    m = load_manifest(folder)
    print(json.dumps({"folder": f"{cfg.work_dir}/shards/{folder.name}",
                      "samples": m["total_samples"], "counts": m["counts"]}, indent=1))


def _train(args) -> None:
    from geofm_lib.training.loop import train

    cfg = _config(args)
    check_runtime(cfg)
    result = train(cfg)
    if result.parameters.get("world_size", 1) == 1 or _rank() == 0:
        print(json.dumps({"checkpoint": f"{cfg.work_dir}/checkpoints/{cfg.train_hash}/last.pt",
                          "steps": result.steps, "seconds": result.seconds,
                          "device": result.device,
                          "world_size": result.parameters.get("world_size", 1),
                          "history": result.history}, indent=1))


def _ssl(args) -> None:
    from geofm_lib.ssl.pretraining import pretrain

    cfg = _config(args)
    check_runtime(cfg)
    result = pretrain(cfg, show_progress=_rank() == 0)
    if _rank() == 0:
        last = result.history[-1] if result.history else {}
        print(json.dumps({"encoder": f"{cfg.work_dir}/checkpoints/{cfg.ssl_hash}/encoder.pt",
                          "seconds": result.seconds,
                          "already_finished": result.already_finished,
                          "resumed": result.resumed, **result.params,
                          "final_loss": last.get("loss"),
                          "embedding_std": last.get("embedding_std")}, indent=1))


def _params(args) -> None:
    """The resolved parameters as YAML (valid as a parameter file), each with its meaning as a
    comment, then every notebook's own parameters (``-p NAME=VALUE`` with ``geofm report``,
    ``-p NAME VALUE`` with papermill)."""
    from geofm_lib.config import Config
    from geofm_lib.config.loading import value_origins
    from geofm_lib.report.reports import local_parameters, notebooks

    cfg = _config(args)
    origins = value_origins(args.preset, args.experiment, **_overrides(args.param))
    fields = Config.model_fields
    for key, value in cfg.to_dict().items():
        text = yaml.safe_dump({key: value}, sort_keys=False).rstrip()
        what = " ".join((fields[key].description or "").split()) if key in fields else ""
        source = {"preset": "--preset", "experiment": "--experiment"}.get(
            key, origins.get(key, "schema default"))
        what = f"{what} [{source}]" if what else f"[{source}]"
        if "\n" not in text:
            print(f"{text}  # {what}")
        else:
            print(f"# {what}\n{text}")
    print(f"# hash {cfg.hash}  data_hash {cfg.data_hash}  run {cfg.name}")
    print("# each notebook's own parameters: geofm report -p NAME=VALUE (given to every notebook "
          "that has it; the run gets its own folder), papermill -p NAME VALUE")
    for stem, params in local_parameters(notebooks(project_root())).items():
        for name, p in params.items():
            what = p["help"].replace(" (notebook-local)", "")
            print(f"#   {stem[:2]} {name} = {p['default']}  ({what})")


def _graph(args) -> None:
    """The chain's graph with the times of the run's last report: per notebook what it needs,
    reads and writes and how long it took; the critical path. Also written to
    work/bench/chain-<run>.json."""
    from geofm_lib.io import atomic_write_json
    from geofm_lib.report import graph
    from geofm_lib.report.reports import notebooks

    cfg = _config(args)
    info_path = project_root() / "reports" / cfg.name / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else None
    t = graph.timings(info, [b.stem for b in notebooks(project_root())])
    print(graph.format_timings(t))
    if info is None:
        print(f"no report of run {cfg.name} yet (reports/{cfg.name}/run.json): the graph alone")
        return
    out = project_root() / "work" / "bench" / f"chain-{cfg.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, t)
    print(f"written: work/bench/{out.name}")


def _study(args) -> None:
    from geofm_lib.report.reports import run_study

    if args.study in ("seed001", "spectral"):
        from geofm_lib.report.spectral_study import run_spectral_study
        from geofm_lib.report.ssl_study import run_seed001_study

        if args.experiments:
            raise SystemExit("geofm study: --experiments belongs to --study seed000")
        methods = args.methods.split(",") if args.methods else None
        run = run_seed001_study if args.study == "seed001" else run_spectral_study
        page = run(args.preset, methods, **_overrides(args.param))
        print(f"study: reports/{page.name} (and reports/index.html)")
        return
    if args.methods:
        raise SystemExit("geofm study: --methods belongs to --study seed001 or spectral")
    exps = args.experiments.split(",") if args.experiments else None
    page = run_study(args.preset, exps, **_overrides(args.param))
    print(f"study: reports/{page.name} (and reports/index.html)")


def _index(args) -> None:
    from geofm_lib.report.index import build_index

    print(build_index(project_root() / "reports"))


def _example_corpus(args) -> None:
    from geofm_lib.data.examples import write_karpathy_corpus

    folder = Path(args.folder)
    folder = folder if folder.is_absolute() else project_root() / folder
    cap = write_karpathy_corpus(folder, n_images=args.images, seed=args.seed)
    print(f"corpus: {args.folder}/ ({cap.name} and images/)")


def _bigearthnet_root(args) -> None:
    from geofm_lib.data.examples import bigearthnet_torchgeo_root

    counts = bigearthnet_torchgeo_root(args.out, args.s2, args.s1, args.splits, args.sensor,
                                       args.seed)
    print(json.dumps(counts))


def _bench(args) -> None:
    from geofm_lib.bench.data import main as bench_main

    bench_main(quick=args.quick)


def _bench_compile(args) -> None:
    from geofm_lib.bench.compile import main as compile_main

    compile_main(quick=args.quick, repeats=args.repeats)


def _bench_train(args) -> None:
    """The benchmark notebook -> reports/bench-training/, numbers in work/bench/;
    ``--gpu-only``: the CUDA figures alone, printed and written, without the notebook."""
    if args.gpu_only:
        from geofm_lib.bench.train import run as train_bench

        print(json.dumps(train_bench(args.quick, args.device or "cuda", not args.no_openclip,
                                     with_cpu=False, with_compile=args.compile), indent=1))
        return
    from geofm_lib.report.reports import run_page

    page = run_page(project_root() / "notebooks" / "bench_training.ipynb", "bench-training",
                    {"quick": args.quick, "device": args.device,
                     "with_openclip": not args.no_openclip, "with_ddp": not args.no_ddp})
    numbers = load_config("demo").path("bench", "training.json")
    print(numbers.read_text())
    print(f"numbers: {load_config('demo').work_dir}/bench/training.json; "
          f"report: reports/{page.parent.name}/{page.name}")


def _bench_hyperspectral_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="48 patches, 3 steps (CI)")
    p.add_argument("--image-px", type=int, default=128, help="patch side (EnMAP's: 128)")


def _bench_hyperspectral(args) -> None:
    from geofm_lib.bench.hyperspectral import run as hyper_bench

    hyper_bench(args.quick, args.image_px)


def _bench_ssl(args) -> None:
    from geofm_lib.bench.ssl import run as ssl_bench

    ssl_bench(args.preset, args.device, args.quick,
              args.methods.split(",") if args.methods else None)


@dataclass(frozen=True)
class Command:
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
    writes: str = "nothing (prints only)"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, each option's default after its help (where it has one)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


RUN_OUTPUT = ("work/ (shards under work/shards/<data hash>, checkpoints under "
              "work/checkpoints/<hash>, stage records under work/runs/<run>/)")


COMMANDS: dict[str, Command] = {
    "report": Command("execute notebooks and publish HTML reports", _report_args, _report,
                      "reports/<run>/ (a page and the executed .ipynb per notebook, "
                      "metrics.json, params.yaml, run.json), reports/index.html, and "
                      + RUN_OUTPUT),
    "data": Command("build WebDataset shards for a parameter set", _run_args, _data,
                    "work/shards/<data hash>/ (shards, manifest.json, dataset card)"),
    "train": Command("train the CLIP run of a parameter set (as notebook 03; under torchrun "
                     "on every rank)", _run_args, _train),
    "ssl": Command("MoCo-v2 pretraining of a parameter set (as notebook 07; under torchrun on "
                   "every rank)", _run_args, _ssl, RUN_OUTPUT),
    "params": Command("print the resolved parameters, each with what it means, and each "
                      "notebook's own", _run_args, _params),
    "study": Command("seed 000's study (compiled, A, B, C, C+metadata -> "
                     "reports/study-<preset>.html) or, with --study seed001, seed 001's "
                     "SSL-for-segmentation comparison -> reports/study-seed001-<preset>.html, "
                     "or with --study spectral its hyperspectral protocols -> "
                     "reports/study-spectral-<preset>.html",
                     _study_args, _study, "reports/study-*.html and a report folder per "
                     "run, and " + RUN_OUTPUT),
    "graph": Command("the notebooks as a dependency graph (what each needs, reads and writes) "
                     "with the times of the run's last report and its critical path",
                     _run_args, _graph, "work/bench/chain-<run>.json"),
    "index": Command("rebuild reports/index.html (and the study pages)", _no_args, _index),
    "example-corpus": Command("write a Karpathy-style image-text corpus (images/ + "
                              "dataset.json) from the simulator", _corpus_args,
                              _example_corpus),
    "bigearthnet-root": Command("make torchgeo's BigEarthNet root layout (symlinks + split "
                                "CSVs) from patch folders", _bigearthnet_args,
                                _bigearthnet_root),
    "bench": Command("data-stage benchmarks (prints and writes numbers)", _bench_args, _bench),
    "bench-compile": Command("shard-compile benchmark: 1 vs 2 processes vs Dask, bytes per "
                             "sample, loader vs step", _bench_compile_args, _bench_compile),
    "bench-train": Command("training benchmarks: ours vs open_clip_train, loader vs step, 1 vs "
                           "2 processes, CUDA MFU", _bench_train_args, _bench_train),
    "bench-hyperspectral": Command("EnMAP shards: bytes per sample, the loader against the "
                                   "step", _bench_hyperspectral_args, _bench_hyperspectral),
    "bench-ssl": Command("seed 001's SSL methods and segmenters: samples/s and memory of "
                         "the step at a preset's sizes", _bench_ssl_args, _bench_ssl),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geofm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, command in COMMANDS.items():
        command.arguments(sub.add_parser(
            name, help=command.help, formatter_class=_HelpFormatter,
            description=textwrap.fill(f"{command.help[0].upper()}{command.help[1:]}.", 90)
            + "\n\n" + textwrap.fill(f"Writes: {command.writes}.", 90)))
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.cmd].run(args)
    except GeofmError as exc:  # expected faults: one message with the fix, no traceback
        print(f"geofm: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `geofm params | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, RuntimeError) as exc:  # the machine's faults: disk full, read-only folder
        hint = environment_hint(str(exc), getattr(exc, "filename", None))
        if hint is None:
            raise
        print(f"geofm: error: {type(exc).__name__}: {str(exc)[:200]}; {hint}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
