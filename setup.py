"""Build hook: generate the Python gRPC code from proto/ before packaging.

The generated files land in featurewatch/v1/ (git-ignored) so that the import path
`featurewatch.v1.<name>_pb2` matches the proto package and no hand edits are possible.
"""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent


def generate_protos() -> None:
    from grpc_tools import protoc  # build-time dependency only

    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    if not protos:
        return
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={ROOT}",
            f"--pyi_out={ROOT}", f"--grpc_python_out={ROOT}", *protos]
    (ROOT / "featurewatch" / "v1").mkdir(exist_ok=True)
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {protos}")
    (ROOT / "featurewatch" / "v1" / "__init__.py").touch()


# At load time, so before every setuptools command: the PEP 660 editable path runs egg_info
# (which needs featurewatch/v1 to exist) before, or instead of, build_py.
generate_protos()
setup()
