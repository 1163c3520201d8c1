# Sourced by .ci/integration_*.sh: what both integration virtualenvs share.

# fresh_venv NAME DIR: a new virtualenv, in DIR (emptied first and kept afterwards, to look around after a
# failure) when DIR is set, else in a new temporary folder removed on exit. Sets $venv and $py.
fresh_venv() {
    local name="$1" keep="${2:-}"
    if [[ -n "$keep" ]]; then
        venv="$keep"
        rm -rf "$venv"
    else
        _fresh_root="$(mktemp -d "${TMPDIR:-/tmp}/sharpv-$name.XXXXXX")"
        trap 'rm -rf "$_fresh_root"' EXIT
        venv="$_fresh_root/venv"
    fi
    python -m venv "$venv"
    py="$venv/bin/python"
    "$py" -m pip install --quiet torch==2.13.0
    torch_cpu="$("$py" -c 'import importlib.metadata as m; print(m.version("torch"))')"
}

# keeps_cpu_torch WHAT: fail when an install replaced the CPU torch installed first
keeps_cpu_torch() {
    "$py" -c "import importlib.metadata as m, sys; v = m.version('torch'); sys.exit(v != '$torch_cpu' and f'$1 replaced torch $torch_cpu by {v}')"
}

# install_torchvision_shim: PyPI's torchvision is CUDA-linked; next to the CPU torch it imports only with the
# test-only shim tests/integrations/torchvision_cpu_shim.py, loaded by a .pth file in every process
install_torchvision_shim() {
    local site
    site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    cp tests/integrations/torchvision_cpu_shim.py "$site/sharpv_torchvision_cpu_shim.py"
    echo "import sharpv_torchvision_cpu_shim" > "$site/sharpv_torchvision_cpu_shim.pth"
}

# print_versions PACKAGE...: the installed version of each
print_versions() {
    "$py" -c 'import importlib.metadata as m, sys; [print(f"  {n} {m.version(n)}") for n in sys.argv[1:]]' "$@"
}
