#!/usr/bin/env bash
# Installs the system packages LoGoNet Studio needs to build, test and run headless, when they are missing:
#   xvfb + xauth          a virtual X display for the app on machines without one
#   mesa-vulkan-drivers   lavapipe, the software Vulkan driver wgpu renders with (app, egui_kittest snapshots)
#   libegl1 libgl1        Mesa EGL/GL: the app's default renderer (glow), and wgpu's fallback
#   libgl1-mesa-dri       llvmpipe, the software OpenGL driver the app renders with under Xvfb
#   libxkbcommon-x11-0    keyboard handling for winit under X11
#   cmake g++             build CharLS (the JPEG-LS codec of dicom-pixeldata's `charls` feature)
# Rust itself: the toolchain pinned in rust-toolchain.toml (1.95.0) with rustfmt and clippy.
set -euo pipefail

need=()
for pkg in xvfb xauth mesa-vulkan-drivers libegl1 libgl1 libgl1-mesa-dri libxkbcommon-x11-0 cmake g++; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust 1.95 with rustup (https://rustup.rs) first" >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
