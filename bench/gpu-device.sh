#!/usr/bin/env bash
# The gpu backend's benchmark on a GPU server, from the folder bench/pack-gpu.mjs made (no Node.js
# or registry needed there). Reports what the machine offers (NVIDIA driver, Vulkan loader and
# ICDs, the adapters Dawn finds), then times a float32 matmul (4096^3 on a real GPU, 1024^3 on a
# software one) and training steps of a small decoder in the best gpu.js mode, and prints one
# JSON line last. Stays within 5 minutes.
# Usage: bench/gpu-device.sh [pack-dir]   (default .gpu-pack; run from the repository root)
set -uo pipefail
PACK=$(cd "${1:-.gpu-pack}" && pwd) || { echo '{"error":"no pack folder: run node bench/pack-gpu.mjs first"}'; exit 1; }
WORK=$(mktemp -d /tmp/rrt-gpu.XXXXXX)
START=$(date +%s)
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

section() { echo "== $*" >&2; }

section machine
uname -srm >&2
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
else
  echo "no nvidia-smi" >&2
fi

section "vulkan loader"
LOADER=$(ldconfig -p 2>/dev/null | grep -m1 'libvulkan.so.1' | sed 's/.*=> //')
if [ -n "$LOADER" ]; then
  echo "system: $LOADER" >&2
  # The NVIDIA ICD needs glvnd's libGLdispatch; bring it where the system lacks it.
  if ! ldconfig -p 2>/dev/null | grep -q 'libGLdispatch.so.0' && [ -f "$PACK/lib/libGLdispatch.so.0" ]; then
    mkdir -p "$WORK/lib" && cp "$PACK/lib/libGLdispatch.so.0" "$PACK/lib/libGLX.so.0" "$PACK/lib/libEGL.so.1" "$WORK/lib/" 2>/dev/null
    export LD_LIBRARY_PATH="$WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "glvnd: packed" >&2
  fi
elif [ -f "$PACK/lib/libvulkan.so.1" ]; then
  echo "none on the system; using the packed one" >&2
  export LD_LIBRARY_PATH="$PACK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  LOADER=packed
else
  echo "none" >&2
fi

section "vulkan ICDs"
ICDS=""
for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d; do
  for f in "$d"/*.json; do [ -f "$f" ] && ICDS="$ICDS $f" && echo "$f" >&2; done
done
# Containers mount the NVIDIA ICD outside the loader's search path (a copy in /usr/share may not
# point at the mounted driver).
NV_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$NV_ICD" ]; then
  export VK_DRIVER_FILES=$NV_ICD VK_ICD_FILENAMES=$NV_ICD
  echo "VK_DRIVER_FILES=$NV_ICD" >&2
fi

# unpack FILE(.xz|.gz) DEST
unpack() {
  if [ -f "$1.xz" ]; then
    if command -v xz >/dev/null; then xz -dc "$1.xz" >"$2"
    else python3 -c 'import lzma,sys; sys.stdout.buffer.write(lzma.decompress(open(sys.argv[1],"rb").read()))' "$1.xz" >"$2"; fi
  else
    gunzip -c "$1.gz" >"$2"
  fi
}
section unpack
cp -r "$PACK/node_modules" "$PACK/bench.mjs" "$WORK/"
unpack "$PACK/node" "$WORK/node" && chmod +x "$WORK/node" || { echo '{"error":"cannot unpack node"}'; exit 1; }
D="$WORK/node_modules/webgpu/dist/linux-x64.dawn.node"
unpack "$D" "$D" && rm -f "$D.xz" "$D.gz"
NODE="$WORK/node"
echo "node $("$NODE" --version)" >&2

section "dawn adapters"
ADAPTERS=$(cd "$WORK" && timeout 60 "$NODE" bench.mjs --adapters 2>&1 | grep -v '^Warning: ' | tail -n 1)
echo "$ADAPTERS" >&2
case "$ADAPTERS" in '{"adapters"'*) ;; *) ADAPTERS='{"adapters":null}' ;; esac

section benchmark
LEFT=$((290 - ($(date +%s) - START)))
RESULT=$(cd "$WORK" && timeout "$LEFT" "$NODE" bench.mjs 2> >(grep -v '^Warning: ' >&2) | tail -n 1)
case "$RESULT" in '{'*) ;; *) RESULT="{\"error\":\"the benchmark did not finish within ${LEFT} s\"}" ;; esac

GPU=$(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
ICD_LIST=$(echo $ICDS | sed 's/ /,/g')
rm -rf "$WORK"
# One JSON line: the machine, what Dawn found, and the benchmark's report.
echo "{\"gpu\":\"${GPU:-none}\",\"vulkanLoader\":\"${LOADER:-none}\",\"icds\":\"$ICD_LIST\",\"dawn\":$ADAPTERS,\"bench\":$RESULT,\"seconds\":$(($(date +%s) - START))}"
