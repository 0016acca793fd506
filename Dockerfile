# GPU worker image for the RealNet pipeline: this project plus Prefect, running flow runs from
# the `realnet-gpu` process work pool. The CUDA runtime comes inside the torch wheels (nvidia-*
# packages), so a plain Python base is enough; the host needs the NVIDIA driver and container
# toolkit, and compose reserves the GPUs.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REALNET_ARTIFACTS=/artifacts \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# No apt packages: opencv-python-headless links only libz/libstdc++ (already in the base), and
# the healthchecks use Python rather than curl.

# torch first and pinned, in its own layer: it is ~5 GB and changes far less often than the code.
RUN pip install torch==2.14.1 torchvision==0.29.1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY realnet_core ./realnet_core
COPY stages ./stages
COPY storage ./storage
COPY flows ./flows
RUN pip install .

# prefect.yaml, configs and the rest are needed at run time: `prefect deploy --all` reads
# prefect.yaml from the working directory and flow runs start from it.
COPY . .

# Non-root; /app is theirs because `prefect deploy` and flow runs write beside prefect.yaml.
# /artifacts and /locks are created here so fresh named volumes inherit this ownership.
ARG REALNET_UID=1000
RUN useradd --create-home --uid "${REALNET_UID}" realnet \
    && mkdir -p /artifacts /data /locks \
    && chown -R realnet:realnet /app /artifacts /locks
USER realnet

CMD ["prefect", "worker", "start", "--pool", "realnet-gpu", "--type", "process"]
