# Sourced by the GPU record scripts (sweeps/*/run.sh, sweeps/prediction_check/seeds.sh), from the repo root on the
# lent H200: installs the wheels of .gpu/ (git-ignored, carried: ../shared/wheels/gpu-py312 and threadpoolctl.py)
# into /tmp/site, lays the package out as its wheel does in /tmp/src, exports the environment, and writes
# $OUT/device.txt. Sets REPO to the repo root. A second source with the same code is a no-op on disk (a job started
# by the first one may be importing from /tmp/src: sweeps/cpu_demo.sh runs beside a sweep).
REPO=$PWD
stamp=$(cat .gpu/*.whl .gpu/threadpoolctl.py | md5sum | cut -c1-12)-$(tar cf - windtunnel hydra_plugins conf 2>/dev/null | md5sum | cut -c1-12)
if [ "$(cat /tmp/src/.stamp 2>/dev/null)" != "$stamp" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/*.whl || exit 1
  cp .gpu/threadpoolctl.py /tmp/site/
  rm -rf /tmp/src && mkdir -p /tmp/src && cp -r windtunnel hydra_plugins /tmp/src/ && rm -rf /tmp/src/windtunnel/conf
  cp -r conf /tmp/src/windtunnel/conf  # the wheel's layout
  echo "$stamp" > /tmp/src/.stamp
fi
export PYTHONPATH=/tmp/site:/tmp/src PYTHONUNBUFFERED=1 WINDTUNNEL_CACHE=/tmp/wtc
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/device.txt"
