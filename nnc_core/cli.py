"""The ``nnc`` command line tool.

    nnc encode MODEL -o OUT.nnr   encode a model (.npz, or any installed plugin's format)
    nnc info IN.nnr               list every unit and each tensor's bits per parameter
    nnc decode IN.nnr -o MODEL    decode a bitstream into a model of the output's format
    nnc convert SRC -o DST        convert between frameworks, weights carried as NNR
    nnc plugins                   list the framework plugins and their state

With ``--base BASE.npz`` or ``--base BASE.nnr`` (repeat it for a base
bitstream followed by its earlier updates) ``encode`` codes the model as an
incremental update of the base and ``decode`` applies an update to it.

Outputs are written atomically: a failed, interrupted (Ctrl-C, SIGTERM,
SIGHUP) or killed run leaves no partial file and an existing file untouched.

Exit status: 0 done; 1 an error, reported as one line on stderr
(``nnc COMMAND: error: ...``); 2 a usage error (argparse); 130 interrupted
(Ctrl-C); 128 + N ended by signal N (SIGTERM: 143, SIGHUP: 129).  Output read
by a program that stops early (``nnc info m.nnr | head``) ends quietly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

import nnc_core
from nnc_core.api import encode_to
from nnc_core.bitstream.units import (
    AggregateUnit,
    AggregateUnitType,
    CompressedDataUnit,
    LayerParameterSet,
    ModelParameterSet,
    PayloadType,
    StartUnit,
    TopologyStorageFormat,
    TopologyUnit,
    Unit,
    UnitType,
    flatten_units,
    read_units,
)
from nnc_core.config import EncoderConfig
from nnc_core.decoding import decode_units
from nnc_core.errors import ConfigError, NncError
from nnc_core.files import write_atomically
from nnc_core.incremental import encode_update
from nnc_core.model import NNRModel, decode_model, topology_of
from nnc_core.parallel import check_workers
from nnc_core.plugins import get_plugin_manager, read_model, write_model
from nnc_core.progress import Progress
from nnc_core.version import __version__


def _unit_name(unit_type: int) -> str:
    try:
        return UnitType(unit_type).name
    except ValueError:
        return f"type {unit_type}"


def _describe(unit: Unit) -> str:
    if isinstance(unit, StartUnit):
        return f"general_profile_idc={unit.general_profile_idc}"
    if isinstance(unit, ModelParameterSet):
        parts = [f"qp_density={unit.mps_qp_density}", f"qp={unit.mps_quantization_parameter}"]
        if unit.mps_parent_signalling_enabled_flag:
            parts.append("parent_signalling")
        if unit.base_model_id:
            parts.append(f"base_model_id={unit.base_model_id!r}")
        return " ".join(parts)
    if isinstance(unit, LayerParameterSet):
        return f"qp_density={unit.lps_qp_density} qp={unit.lps_quantization_parameter}"
    if isinstance(unit, AggregateUnit):
        try:
            kind = AggregateUnitType(unit.aggregate_unit_type).name
        except ValueError:
            kind = str(unit.aggregate_unit_type)
        return f"{kind} units={len(unit.units)}" + (" entry_points" if unit.entry_points_present_flag else "")
    if isinstance(unit, TopologyUnit):
        try:
            fmt = TopologyStorageFormat(unit.topology_storage_format).name
        except ValueError:
            fmt = str(unit.topology_storage_format)
        return f"storage={fmt} compression={unit.topology_compression_format} data={len(unit.topology_data)} bytes"
    if isinstance(unit, CompressedDataUnit):
        h = unit.header
        parts = [
            PayloadType(h.payload_type).name,
            "ids=" + ",".join(str(i) for i in h.element_ids),
            "dims=" + "x".join(str(d) for d in h.tensor_dimensions),
        ]
        if h.tensor_dimension_mapping is not None:
            m = h.tensor_dimension_mapping
            parts.append(f"concat_axis={m.concatenation_axis_index} split=" + ",".join(str(i) for i in m.split_index))
        if h.first_tensor_dimension_shift:
            parts.append(f"first_dim_shift={h.first_tensor_dimension_shift}")
        if unit.partial_data_counter:
            parts.append(f"part={unit.partial_data_counter}")
        if h.dq_flag:
            parts.append("dq")
        if h.codebook_present_flag:
            parts.append("codebook=" + "/".join(str(len(c.values)) for c in h.codebooks))
        if h.scan_order:
            parts.append(f"scan_order={h.scan_order} entry_points={len(h.entry_points)}")
        if h.parent_node_id_present_flag:
            parts.append(f"parent depth={h.put_node_depth}" + (" tca" if h.temporal_context_modeling_flag else ""))
        return " ".join(parts)
    return ""


def cmd_info(args: argparse.Namespace) -> int:
    data = Path(args.input).read_bytes()
    units = read_units(data)
    print(f"{args.input}: {len(data)} bytes, {len(units)} units")
    print(f"{'unit':>4}  {'type':<8} {'offset':>9} {'size':>9}  header")
    for i, unit in enumerate(units):
        print(f"{i:>4}  {_unit_name(unit.unit_type):<8} {unit.offset:>9} {unit.size:>9}  {_describe(unit)}")
        for j, inner in enumerate(unit.units if isinstance(unit, AggregateUnit) else []):
            label = f"{i}.{j}"
            print(f"{label:>6}  {_unit_name(inner.unit_type):<8} {inner.offset:>7} {inner.size:>9}  {_describe(inner)}")
    update = any(
        isinstance(u, ModelParameterSet) and u.mps_parent_signalling_enabled_flag for _, _, u in flatten_units(units)
    )
    if (
        update
        and not args.no_decode
        and any(
            isinstance(u, CompressedDataUnit) and u.header.temporal_context_modeling_flag
            for _, _, u in flatten_units(units)
        )
    ):
        print(
            "\n(an incremental update with temporal context adaptation: its tensors decode only with its base, "
            "nnc decode --base)"
        )
        return 0
    tensors = decode_units(units, len(data), workers=check_workers(args.workers)) if not args.no_decode else []
    if tensors:
        # bits per parameter: the units that carried a tensor, shared by all
        # tensors carried by exactly those units (block members, mapped elements)
        sizes = {(i, j): u.size for i, j, u in flatten_units(units)}
        per_group: dict[tuple[Any, ...], int] = {}
        for t in tensors:
            per_group[t.carried_by] = per_group.get(t.carried_by, 0) + t.values.size
        print()
        print(f"{'tensor':<48} {'dtype':<8} {'shape':<16} {'qp':>5} {'bits/param':>10}")
        for t in tensors:
            bits = 8 * sum(sizes[c] for c in t.carried_by)
            bpp = bits / max(per_group[t.carried_by], 1)
            shape = "x".join(str(d) for d in t.values.shape)
            print(f"{t.name:<48} {str(t.values.dtype):<8} {shape:<16} {'' if t.qp is None else t.qp:>5} {bpp:>10.3f}")
        total = sum(t.values.size for t in tensors)
        print(f"\n{total} parameters, {8 * len(data) / max(total, 1):.3f} bits per parameter for the whole bitstream")
    return 0


def _load_base(paths: list[str] | None) -> Mapping[str, np.ndarray] | list[bytes] | None:
    """The base of --base: one model (.npz or any installed plugin's format),
    or NNR bitstreams (.nnr: a base and its earlier updates, decoded in order)."""
    if not paths:
        return None
    if len(paths) == 1 and not paths[0].endswith(".nnr"):
        return read_model(paths[0]).tensors
    if not all(p.endswith(".nnr") for p in paths):
        raise ConfigError("--base takes one model, or NNR bitstreams (.nnr: a base and its updates, in order)")
    return [Path(p).read_bytes() for p in paths]


def cmd_decode(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if args.base:
        data = Path(args.input).read_bytes()
        model = decode_model(data, base=_load_base(args.base), dtype=args.dtype, workers=args.workers)
        write_model(model, output, framework=args.framework, template=args.template)
        count = len(model.tensors)
    else:
        # tensors are decoded as the writer asks for them, on --workers threads
        with nnc_core.open(
            args.input,
            recompose=not args.no_recompose,
            apply_local_scaling=args.apply_local_scaling,
            unprune=args.unprune,
            workers=args.workers,
            dtype=args.dtype,
        ) as reader:
            if args.tensor:
                missing = [name for name in args.tensor if name not in reader]
                if missing:
                    raise ConfigError(f"{args.input} has no tensor {missing[0]!r} (nnc info lists them)")
            names = list(dict.fromkeys(args.tensor)) if args.tensor else list(reader)
            total = sum(int(np.prod(reader.info(n).shape, dtype=np.int64)) for n in names)
            with Progress("decode", total, quiet=args.quiet) as bar:
                tensors = _Selected(reader, names, bar)
                model = NNRModel(tensors, topology=topology_of(reader.units))  # type: ignore[arg-type]  # a read-only mapping, decoding as it is read
                write_model(model, output, framework=args.framework, template=args.template)
            count = len(names)
    if not args.quiet:
        print(f"{args.input}: {count} tensors -> {output}", file=sys.stderr)
    return 0


class _Selected(Mapping[str, np.ndarray]):
    """The tensors of a reader a decode writes out (all, or those of --tensor),
    ticking the progress bar as each is decoded.

    A writer that iterates (the .npz writer) gets each tensor once, decoded on
    the reader's threads and never held; one that looks tensors up by name
    gets each decoded alone and kept, as a dict would hold it.
    """

    def __init__(self, reader: nnc_core.NNRReader, names: list[str], bar: Progress) -> None:
        self.reader, self.names, self.bar = reader, names, bar
        self.all = len(names) == len(reader)
        self.known = set(names)
        self.looked_up: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.known:
            raise KeyError(name)
        if name not in self.looked_up:
            self.looked_up[name] = self.reader[name]
            self.bar.advance(name, int(self.looked_up[name].size))
        return self.looked_up[name]

    def __contains__(self, name: object) -> bool:
        return name in self.known

    def shape_of(self, name: str) -> tuple[int, ...]:
        """A tensor's shape from the headers (writers that lay out a file before the data ask)."""
        if name not in self.known:
            raise KeyError(name)
        return self.reader.info(name).shape

    def dtype_of(self, name: str) -> np.dtype:
        """The dtype the tensor is decoded in, from the headers."""
        if name not in self.known:
            raise KeyError(name)
        return np.dtype(self.reader.info(name).dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:  # type: ignore[override]  # a generator (decoding in order), not an ItemsView
        return self._decoded(self.reader.items)

    def items_as_decoded(self) -> Iterator[tuple[str, np.ndarray]]:
        """As :meth:`items`, each tensor as soon as it is decoded (see
        :meth:`nnc_core.NNRReader.items_as_decoded`), for writers whose
        format takes entries in any order."""
        return self._decoded(self.reader.items_as_decoded)

    def _decoded(self, decode: Callable[[], Iterator[tuple[str, np.ndarray]]]) -> Iterator[tuple[str, np.ndarray]]:
        if not self.all:  # a few tensors: each decoded alone
            yield from super().items()
            return
        for name, value in decode():
            self.bar.advance(name, int(value.size))
            yield name, value


def _size_of(tensors: Mapping[str, np.ndarray], name: str) -> int:
    shape_of = getattr(tensors, "shape_of", None)
    shape = shape_of(name) if shape_of is not None else np.shape(tensors[name])
    return int(np.prod(shape, dtype=np.int64))


class _Counted(Mapping[str, np.ndarray]):
    """A model's tensors as the encoder reads them, counting their parameters;
    reads nothing itself."""

    def __init__(self, tensors: Mapping[str, np.ndarray]) -> None:
        self.tensors = tensors
        self.counted: set[str] = set()
        self.parameters = 0

    def __getitem__(self, name: str) -> np.ndarray:
        value = self.tensors[name]
        if name not in self.counted:
            self.counted.add(name)
            self.parameters += int(np.size(value))
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __contains__(self, name: object) -> bool:
        return name in self.tensors


def _encoder_config(args: argparse.Namespace) -> EncoderConfig:
    """The encoder settings the command line gives (each invalid one named)."""
    return EncoderConfig(
        workers=getattr(args, "workers", None),
        qp=args.qp,
        qp_density=args.qp_density,
        nonweight_qp=args.nonweight_qp,
        use_dq=not args.no_dq,
        lambda_scale=args.lambda_scale,
        codebook_mode=args.codebook_mode,
        scan_order=args.scan_order,
        row_skipping=args.row_skipping,
        int_quant_bw=args.int_quant_bw,
        raw_float=args.raw_float,
        lossless=args.lossless,
        max_part_elements=args.max_part_elements,
        aggregate=args.aggregate,
        **_reduction_options(args),
    )


def cmd_encode(args: argparse.Namespace) -> int:
    model = read_model(args.input, framework=args.framework)
    config = _encoder_config(args)
    base = _load_base(args.base)
    output = Path(args.output)
    # parameters done after the first n tensors (blocks count their members), from
    # the shapes alone where the model's mapping tells them without reading (.npz)
    sizes = [_size_of(model.tensors, name) for name in model.tensors]
    done_after = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    with Progress("encode", int(done_after[-1]), quiet=args.quiet) as bar:
        tensors = _Counted(model.tensors)

        def progress(done: int, total: int, name: str) -> None:
            bar.update_to(int(done_after[min(done, len(sizes))]), name)

        if base is None:
            size = encode_to(
                output,
                tensors,
                config,
                blocks=model.blocks or None,
                topology=model.topology,
                dimension_shift=model.dimension_shift or None,
                progress=progress,
            )
        else:
            data = encode_update(
                tensors,
                base,
                config=config.replace(row_skipping=True),
                tca=not args.no_tca,
                hdsp=not args.no_hdsp,
                progress=progress,
            )
            write_atomically(output, lambda f: f.write(data))
            size = len(data)
    if not args.quiet:
        params = tensors.parameters
        print(
            f"{args.input} ({model.framework}): {len(model.tensors)} tensors, {params} parameters -> {output}: "
            f"{size} bytes, {8 * size / max(params, 1):.3f} bits per parameter",
            file=sys.stderr,
        )
    return 0


def _name_value(text: str, kind: Callable[[str], object], option: str) -> tuple[str, object]:
    name, sep, value = text.rpartition("=")
    if not sep or not name:
        raise ConfigError(f"{option} {text!r}: expected NAME=VALUE")
    try:
        return name, kind(value)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: {value!r} is not a valid value") from None


def _reduction_options(args: argparse.Namespace) -> dict[str, Any]:
    """Encoder options of the parameter-reduction flags (clause 8)."""
    options: dict[str, Any] = {
        "sparsity": args.sparsity,
        "structured_sparsity": args.structured_sparsity,
        "local_scaling": args.local_scaling,
    }
    if args.prune:
        options["prune"] = dict(_name_value(p, float, "--prune") for p in args.prune)
    if args.prune_consumer:
        consumers: dict[str, list[str]] = {}
        for text in args.prune_consumer:
            weight, consumer = _name_value(text, str, "--prune-consumer")
            consumers.setdefault(weight, []).append(str(consumer))
        options["prune_consumers"] = consumers
    if args.unification:
        try:
            rows, cols = (int(v) for v in args.unification.split(","))
        except ValueError:
            raise ConfigError(f"--unification {args.unification!r}: expected ROWS,COLUMNS") from None
        options["unification"] = (rows, cols)
    if args.low_rank:
        if len(args.low_rank) == 1 and "=" not in args.low_rank[0]:
            try:
                options["low_rank"] = int(args.low_rank[0])
            except ValueError:
                raise ConfigError(f"--low-rank {args.low_rank[0]!r}: expected RANK or NAME=RANK") from None
        else:
            options["low_rank"] = dict(_name_value(r, int, "--low-rank") for r in args.low_rank)
    return options


def _shape(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give comma-separated integers, e.g. 1,3,320,320") from None


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _example_inputs(args: argparse.Namespace) -> Any:
    """What ``--input-shape`` and ``--input-value`` give the first converter: a
    shape (the first input's), or a dict by input name of shapes and fixed values."""
    if not args.input_shape and not args.input_value:
        return None
    named = [text for text in args.input_shape or [] if "=" in text]
    unnamed = [text for text in args.input_shape or [] if "=" not in text]
    given: Any
    if unnamed:
        if len(unnamed) > 1 or named or args.input_value:
            raise ConfigError(
                "--input-shape: give one shape (the first input's), or NAME=SHAPE for each input "
                "(with --input-value too)"
            )
        given = _shape(unnamed[0], "--input-shape")
    else:
        given = {}
        for text in named:
            name, shape = _name_value(text, str, "--input-shape")
            given[name] = _shape(str(shape), "--input-shape")
        for text in args.input_value or []:
            name, value = _name_value(text, _number, "--input-value")
            given[name] = value
    # the shapes and values go to the first converter; only ONNX's converters take them
    pm = get_plugin_manager()
    src = pm.plugin_for_source(args.input).name
    dst = args.framework or pm.plugin_for_destination(Path(args.output), directory=True).name
    if src != "onnx" or dst not in ("nnef", "tensorflow", "pytorch"):
        option = "--input-shape" if args.input_shape else "--input-value"
        raise ConfigError(
            f"{option} applies to conversions from ONNX to NNEF, TensorFlow or PyTorch, not {src} -> {dst}"
        )
    return given


def cmd_convert(args: argparse.Namespace) -> int:
    from nnc_core.convert import convert, explain

    shape = _example_inputs(args)
    if args.explain:  # the route and each step's status; nothing is written
        explanation = explain(args.input, args.output, target=args.framework, example_inputs=shape)
        print("\n".join(explanation.lines()))
        return 0 if explanation.ok else 1
    with Progress("encode", None, unit="tensor", quiet=args.quiet) as bar:
        report = convert(
            args.input,
            args.output,
            target=args.framework,
            example_inputs=shape,
            progress=lambda done, total, name: bar.update_to(done, name, total=total),
            config=_encoder_config(args),
        )
    if not args.quiet:
        via = "".join(f" via {f}" for f in report.route[1:-1])
        print(
            f"{args.input} ({report.source_framework}) -> {args.output} ({report.target_framework}{via}): "
            f"{report.parameters} parameters as {report.bitstream_bytes} NNR bytes ({report.bits_per_parameter:.3f} bits "
            f"per parameter); {len(report.matched)} tensors carried, {len(report.unmatched)} "
            f"{'derived by the converter' if report.from_decoded else 'left as converted'}",
            file=sys.stderr,
        )
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    statuses = get_plugin_manager().status(import_adapters=args.check)
    print(f"{'plugin':<12} {'distribution':<18} {'version':<9} {'annex':<5} {'framework':<24} {'formats':<28} state")
    for st in statuses:
        fw = f"{st.framework} {st.framework_version or '-'}"
        print(
            f"{st.name:<12} {st.distribution:<18} {st.version:<9} {st.annex or '-':<5} {fw:<24} "
            f"{' '.join(st.suffixes) or '-':<28} {st.state}"
        )
    return 0


def _add_encode_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--qp", type=int, default=-38, help="QP of weights (tensors with more than one dimension); default -38"
    )
    p.add_argument("--qp-density", type=int, default=2, help="QP resolution, 0..7; default 2")
    p.add_argument("--nonweight-qp", type=int, default=-75, help="QP of biases and other 1-D tensors; default -75")
    p.add_argument("--no-dq", action="store_true", help="uniform instead of dependent quantization")
    p.add_argument(
        "--codebook",
        dest="codebook_mode",
        action="store_const",
        const=1,
        default=0,
        help="code float tensors as indices into integer codebooks",
    )
    p.add_argument(
        "--codebook-mode",
        type=int,
        choices=(0, 1, 2),
        dest="codebook_mode",
        help="0 no codebooks, 1 always (= --codebook), 2 where smaller than uniform",
    )
    p.add_argument("--scan-order", type=int, default=0, choices=range(5), help="0 row-major, 1..4 block scans")
    p.add_argument("--row-skipping", action="store_true", help="signal and skip all-zero rows")
    p.add_argument(
        "--lambda",
        dest="lambda_scale",
        type=float,
        default=0.0,
        metavar="L",
        help="rate-distortion optimised quantization with rate weight L (0: nearest points); e.g. 1",
    )
    p.add_argument(
        "--int-quant-bw",
        type=int,
        metavar="BITS",
        help="integer-aligned quantization: per-tensor QPs so that stored integers fit BITS bits",
    )
    p.add_argument(
        "--raw-float",
        action="append",
        default=[],
        metavar="NAME",
        help="send this float tensor uncompressed (lossless, NaN/Inf allowed); repeatable",
    )
    p.add_argument(
        "--lossless",
        action="store_true",
        help="code every float tensor exactly (float32 uncompressed, bf16/fp16/fp8 as a codebook of their bit "
        "patterns, float64 as its bits) and integers as they are: the decoded model equals the input",
    )
    p.add_argument(
        "--max-part-elements",
        type=int,
        metavar="N",
        help="split tensors larger than N elements into several NDUs (partial_data_counter)",
    )
    p.add_argument("--aggregate", action="store_true", help="carry all units after the start unit in one NNR_AGG unit")
    reduce = p.add_argument_group("parameter reduction (clause 8; docs/guide/reduction.md)")
    reduce.add_argument(
        "--sparsity",
        type=float,
        default=0.0,
        metavar="S",
        help="statistics-adaptive sparsification of the weights to a fraction S of zeros",
    )
    reduce.add_argument(
        "--structured-sparsity",
        type=float,
        default=0.0,
        metavar="GAIN",
        help="zero weight rows whose mean magnitude is below GAIN times the mean over rows (e.g. 0.9)",
    )
    reduce.add_argument(
        "--prune",
        action="append",
        default=[],
        metavar="NAME=RATIO",
        help="remove this fraction of the weight's output rows (smallest L1 norm); repeatable",
    )
    reduce.add_argument(
        "--prune-consumer",
        action="append",
        default=[],
        metavar="WEIGHT=NAME",
        help="also remove the pruned rows of WEIGHT from dimension 1 of NAME; repeatable",
    )
    reduce.add_argument(
        "--unification",
        metavar="ROWS,COLUMNS",
        help="weights share one magnitude per ROWS x COLUMNS block (needs --no-dq)",
    )
    reduce.add_argument(
        "--low-rank",
        action="append",
        default=[],
        metavar="RANK|NAME=RANK",
        help="send weights as rank-RANK factors G, H (all weights where it saves parameters, or NAME)",
    )
    reduce.add_argument(
        "--local-scaling", action="store_true", help="per-row local scaling factors fitted to each quantized weight"
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="threads coding tensors at once (default: the CPUs available; 1: no threads); "
        "the output does not depend on it",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnc", description="ISO/IEC 15938-17 Neural Network Coding")
    parser.add_argument("--version", action="version", version=f"nnc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    encode = sub.add_parser(
        "encode",
        help="encode a model (.npz or a plugin's format) into an NNR bitstream",
        epilog="examples:\n  nnc encode model.npz -o model.nnr                      # NNCodec's defaults (qp -38, dependent quantization)\n  nnc encode model.npz -o model.nnr --qp -32 --workers 4\n  nnc encode finetuned.npz -o update.nnr --base model.npz  # an incremental update",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    encode.add_argument("input", help="model file or folder (.npz archive of arrays, or any installed plugin's format)")
    encode.add_argument("-o", "--output", required=True, help="output NNR bitstream")
    encode.add_argument("--framework", help="plugin to read the model with (default: chosen from the file)")
    _add_encode_options(encode)
    encode.add_argument(
        "--base",
        action="append",
        metavar="BASE",
        help="code an incremental update of this base model: a model file (.npz or a plugin's format), or BASE.nnr followed by "
        "its earlier updates (repeat --base); row skipping is on",
    )
    encode.add_argument("--no-tca", action="store_true", help="with --base: no temporal context adaptation")
    encode.add_argument(
        "--no-hdsp", action="store_true", help="with --base: no history-dependent significance probability"
    )
    _add_run_options(encode)
    encode.set_defaults(run=cmd_encode)

    info = sub.add_parser(
        "info",
        help="list the units of a bitstream and each tensor's bits per parameter",
        epilog="examples:\n  nnc info model.nnr               # every unit, then each tensor's bits per parameter\n  nnc info model.nnr --no-decode   # headers only",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("input", help="NNR bitstream")
    info.add_argument("--no-decode", action="store_true", help="only parse unit headers")
    info.add_argument(
        "--workers", type=int, metavar="N", help="threads decoding tensors at once (default: the CPUs available)"
    )
    info.set_defaults(run=cmd_info)

    decode = sub.add_parser(
        "decode",
        help="decode a bitstream into a model of the output's format",
        epilog='examples:\n  nnc decode model.nnr -o model.npz\n  nnc decode model.nnr -o one.npz --tensor encoder.layer.0.attention.self.query.weight\n  nnc decode update.nnr -o finetuned.npz --base model.npz',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    decode.add_argument("input", help="NNR bitstream")
    decode.add_argument("-o", "--output", required=True, help="output model (.npz, or any installed plugin's format)")
    decode.add_argument("--framework", help="plugin to write the model with (default: chosen from the output's suffix)")
    decode.add_argument(
        "--template", help="original model, for formats that need one to rebuild what NNR does not carry"
    )
    decode.add_argument(
        "--base",
        action="append",
        metavar="BASE",
        help="the input is an update of this base (as for encode --base); writes the updated model",
    )
    decode.add_argument(
        "--no-recompose", action="store_true", help="keep decomposed weights as their factors NAME_G, NAME_H"
    )
    decode.add_argument(
        "--apply-local-scaling", action="store_true", help="multiply weight rows by their local scaling factors"
    )
    decode.add_argument(
        "--unprune", action="store_true", help="pruned tensors in their original shapes, zeros where pruned"
    )
    decode.add_argument(
        "--dtype",
        metavar="DTYPE",
        help="float tensors in this dtype (float16, bfloat16, float32, float64, ...) instead of their own",
    )
    decode.add_argument(
        "--tensor",
        action="append",
        metavar="NAME",
        help="decode only this tensor (repeatable); the others are not decoded at all",
    )
    _add_run_options(decode)
    decode.set_defaults(run=cmd_decode)

    convert = sub.add_parser(
        "convert",
        help="convert a model to another framework, its weights carried as NNR",
        epilog='examples:\n  nnc convert model.onnx -o model.pt2                    # ONNX -> PyTorch, weights carried as NNR\n  nnc convert model.h5 -o model_nnef/ --qp -40\n  nnc convert model.onnx -o model.pt --input-shape 1,3,48,192 --explain   # route and status, nothing written\n  nnc convert silero_vad.onnx -o vad.pt --input-shape input=1,512 --input-shape state=2,1,128 --input-value sr=16000',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("input", help="source model (file or folder)")
    convert.add_argument("-o", "--output", required=True, help="destination model; its suffix picks the framework")
    convert.add_argument("--framework", help="destination plugin (default: chosen from the output's suffix)")
    convert.add_argument(
        "--input-shape",
        action="append",
        metavar="[NAME=]SHAPE",
        help="static shape of the model's input, e.g. 1,3,320,320, for converters that need one where the "
        "graph's is dynamic (ONNX -> NNEF, TensorFlow, PyTorch); NAME=SHAPE, repeated, for several inputs",
    )
    convert.add_argument(
        "--input-value",
        action="append",
        metavar="NAME=NUMBER",
        help="fix a scalar input of an ONNX graph at a value (e.g. sr=16000): the input leaves the "
        "converted model, and the branches it selects are folded; repeatable",
    )
    convert.add_argument(
        "--explain",
        action="store_true",
        help="print the route (plugins, graph preparation, converters) and each step's status; "
        "write nothing (exit status 1 when a step would fail)",
    )
    _add_encode_options(convert)
    convert.add_argument("-q", "--quiet", action="store_true")
    convert.set_defaults(run=cmd_convert)

    plugins = sub.add_parser(
        "plugins",
        help="list the framework plugins, their versions and state",
        epilog='examples:\n  nnc plugins           # what is installed\n  nnc plugins --check   # import each adapter and its framework',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plugins.add_argument(
        "--check", action="store_true", help="import each plugin's adapter (and framework) to prove it loads"
    )
    plugins.set_defaults(run=cmd_plugins)
    return parser


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like an exception: partial outputs are removed


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    previous = {}
    for sig in [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]:
        try:
            previous[sig] = signal.signal(sig, _exit_on_signal)
        except ValueError:  # not the main thread: leave signals alone
            break
    try:
        return int(args.run(args))
    except BrokenPipeError:
        # the reader went away (`nnc info x.nnr | head`): stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (NncError, OSError) as e:
        print(f"nnc {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"nnc {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
