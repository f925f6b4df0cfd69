#!/usr/bin/env bash
# Set up what is missing for `make run` / `make test`, idempotently; fast on the second call.
#   1. Debian packages (apt-get update only when something must be installed)
#   2. the virtualenv in .venv with `pip install -e .[dev]` (redone only when pyproject.toml changed)
#   3. the face models (egate models build is itself idempotent)
set -euo pipefail
cd "$(dirname "$0")/.."

# One package a line, grouped by the feature that needs it.
APT_PACKAGES=(
    # document reader: barcodes and OCR
    libzbar0
    tesseract-ocr
    tesseract-ocr-eng
    fonts-ocr-b
    # link: the test broker; turnstile: PTY pairs
    mosquitto
    socat
    # systemd-analyze for unit checks; openssl for test certificates
    systemd
    openssl
    # engines: the device check traces the nodes cuInit opens (egate diag engines --device-check)
    strace
    # the traveller's screen: its fonts (Arabic, CJK) and the kiosk browser the tests drive
    fonts-noto-core
    fonts-noto-cjk
    chromium
    chromium-driver
    # ePassport chip: PC/SC daemon, pyscard's build headers, vsmartcard's virtual reader for the tests
    pcscd
    libpcsclite-dev
    swig
    vsmartcard-vpcd
    # ePassport chip, independent peer: vsmartcard's virtual ePassport (vicc) for tests/chip/test_chip_vicc.py
    python3-virtualsmartcard
    # fleet: clustered broker, ops database, socket byte counters (ss) for egate bench fleet
    rabbitmq-server
    postgresql
    iproute2
)
PYTHON=${PYTHON:-python3}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.egate-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: pip install -e .[dev] (a cold install takes about 2-3 minutes)"
    .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
    # tensorrt-stubs declares a dependency on tensorrt itself, which cannot install here: type stubs only.
    .venv/bin/pip install -q --disable-pip-version-check --no-deps 'tensorrt-stubs>=10.0'
    touch "$stamp"
fi

# axe-core (WCAG audits of the traveller's screen in tests), project-local and gitignored. npm comes with
# Debian's `npm` package unless a Node.js that bundles it (e.g. NodeSource's) is installed already.
if [ ! -f .cache/npm/node_modules/axe-core/axe.min.js ]; then
    if ! command -v npm >/dev/null; then
        echo "setup: installing Debian package npm"
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
    fi
    echo "setup: npm install axe-core@4 into .cache/npm"
    mkdir -p .cache/npm
    npm install --silent --no-audit --no-fund --prefix .cache/npm axe-core@4 >/dev/null
fi

if .venv/bin/egate models --help >/dev/null 2>&1 && .venv/bin/egate models build --help >/dev/null 2>&1; then
    .venv/bin/egate models build
fi
