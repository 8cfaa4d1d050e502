"""The ``nnc`` command line tool.

    nnc encode IN.npz -o OUT.nnr encode the arrays of a numpy archive
    nnc info IN.nnr              list every unit and each tensor's bits per parameter
    nnc decode IN.nnr -o OUT.npz decode a bitstream into a numpy archive

Outputs are written atomically: a failed, interrupted (Ctrl-C, SIGTERM,
SIGHUP) or killed run leaves no partial file and an existing file untouched.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import stat
import sys
import tempfile
from pathlib import Path

import numpy as np

import nnc_core
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
    UnitType,
    flatten_units,
    read_units,
)
from nnc_core.decoding import decode_bitstream
from nnc_core.errors import NncError


def _unit_name(unit_type: int) -> str:
    try:
        return UnitType(unit_type).name
    except ValueError:
        return f"type {unit_type}"


def _describe(unit) -> str:  # type: ignore[no-untyped-def]
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
    tensors = decode_bitstream(data, None) if not args.no_decode else []
    if tensors:
        # bits per parameter: the units that carried a tensor, shared by all
        # tensors carried by exactly those units (block members, mapped elements)
        sizes = {(i, j): u.size for i, j, u in flatten_units(units)}
        per_group: dict[tuple, int] = {}
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


def _write_atomically(path: Path, write) -> None:  # type: ignore[no-untyped-def]
    """Write ``path`` as a whole or not at all.

    The content goes to a file in the target's directory that has no name
    (Linux O_TMPFILE; elsewhere a hidden ``.NAME.*.part`` file, removed on
    any failure), is flushed to disk, then takes the place of ``path`` in one
    rename: a reader sees the old file or the new one, never a part, and a
    failed, interrupted or killed run leaves the old file as it was (a killed
    run leaves no file at all, or with the fallback a hidden ``.part`` file).
    The new file gets the old one's permissions, or the umask's for a new one.
    """
    path = path.resolve()
    directory = path.parent
    mode = _file_mode(path)
    tmp: str | None = None
    fd = _unnamed_file(directory, mode)
    if fd is None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
            if tmp is None:  # give the unnamed file a name only now, for the rename
                tmp = _link_unnamed(f.fileno(), directory, path.name)
        os.replace(tmp, path)
        tmp = None
        _fsync_directory(directory)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def _file_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _unnamed_file(directory: Path, mode: int) -> int | None:
    """A descriptor of a new unnamed file in ``directory``, or None where unsupported."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY, mode)
    except OSError:  # file system without O_TMPFILE
        return None


def _link_unnamed(fd: int, directory: Path, name: str) -> str:
    # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N names an O_TMPFILE file; a
    # plain link() would link the magic symlink itself (EXDEV)
    proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.part")
            try:
                os.link(str(fd), tmp, src_dir_fd=proc, follow_symlinks=True)
                return tmp
            except FileExistsError:
                continue
    finally:
        os.close(proc)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def cmd_decode(args: argparse.Namespace) -> int:
    data = Path(args.input).read_bytes()
    tensors = nnc_core.decode(data)
    output = Path(args.output)
    _write_atomically(output, lambda f: np.savez(f, **tensors))
    if not args.quiet:
        print(f"{args.input}: {len(tensors)} tensors -> {output}", file=sys.stderr)
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    with np.load(args.input, allow_pickle=False) as archive:
        tensors = {name: archive[name] for name in archive.files}
    show = (not args.quiet) and sys.stderr.isatty()

    def progress(done: int, total: int, name: str) -> None:
        if show:
            print(f"\r[{done}/{total}] {name[:60]:<60}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    data = nnc_core.encode(
        tensors,
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
        max_part_elements=args.max_part_elements,
        aggregate=args.aggregate,
        progress=progress,
    )
    output = Path(args.output)
    _write_atomically(output, lambda f: f.write(data))
    if not args.quiet:
        params = sum(int(np.asarray(t).size) for t in tensors.values())
        print(f"{args.input}: {len(tensors)} tensors, {params} parameters -> {output}: {len(data)} bytes, "
              f"{8 * len(data) / max(params, 1):.3f} bits per parameter", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnc", description="ISO/IEC 15938-17 Neural Network Coding")
    parser.add_argument("--version", action="version", version=f"nnc {nnc_core.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    encode = sub.add_parser("encode", help="encode the arrays of a .npz archive into an NNR bitstream")
    encode.add_argument("input", help="numpy .npz archive (names -> arrays)")
    encode.add_argument("-o", "--output", required=True, help="output NNR bitstream")
    encode.add_argument("--qp", type=int, default=-38, help="QP of weights (tensors with more than one dimension); default -38")
    encode.add_argument("--qp-density", type=int, default=2, help="QP resolution, 0..7; default 2")
    encode.add_argument("--nonweight-qp", type=int, default=-75, help="QP of biases and other 1-D tensors; default -75")
    encode.add_argument("--no-dq", action="store_true", help="uniform instead of dependent quantization")
    encode.add_argument("--codebook", dest="codebook_mode", action="store_const", const=1, default=0,
                        help="code float tensors as indices into integer codebooks")
    encode.add_argument("--codebook-mode", type=int, choices=(0, 1, 2), dest="codebook_mode",
                        help="0 no codebooks, 1 always (= --codebook), 2 where smaller than uniform")
    encode.add_argument("--scan-order", type=int, default=0, choices=range(5), help="0 row-major, 1..4 block scans")
    encode.add_argument("--row-skipping", action="store_true", help="signal and skip all-zero rows")
    encode.add_argument("--lambda", dest="lambda_scale", type=float, default=0.0, metavar="L",
                        help="rate-distortion optimised quantization with rate weight L (0: nearest points); e.g. 1")
    encode.add_argument("--int-quant-bw", type=int, metavar="BITS",
                        help="integer-aligned quantization: per-tensor QPs so that stored integers fit BITS bits")
    encode.add_argument("--raw-float", action="append", default=[], metavar="NAME",
                        help="send this float tensor uncompressed (lossless, NaN/Inf allowed); repeatable")
    encode.add_argument("--max-part-elements", type=int, metavar="N",
                        help="split tensors larger than N elements into several NDUs (partial_data_counter)")
    encode.add_argument("--aggregate", action="store_true", help="carry all units after the start unit in one NNR_AGG unit")
    encode.add_argument("-q", "--quiet", action="store_true")
    encode.set_defaults(run=cmd_encode)

    info = sub.add_parser("info", help="list the units of a bitstream and each tensor's bits per parameter")
    info.add_argument("input", help="NNR bitstream")
    info.add_argument("--no-decode", action="store_true", help="only parse unit headers")
    info.set_defaults(run=cmd_info)

    decode = sub.add_parser("decode", help="decode a bitstream into a .npz archive")
    decode.add_argument("input", help="NNR bitstream")
    decode.add_argument("-o", "--output", required=True, help="output .npz")
    decode.add_argument("-q", "--quiet", action="store_true")
    decode.set_defaults(run=cmd_decode)
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
