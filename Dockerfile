# bids_genbrain BIDS-App image.
#   CPU:  docker build -t genbrain .
#   CUDA: docker build -t genbrain:cuda --build-arg TORCH_VARIANT=cu128 .
# The install line is README's set-up command (torch pinned so pip never swaps it).
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    GENBRAIN_CACHE_DIR=/opt/genbrain-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    GENBRAIN_DOCKER_TAG=genbrain

RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*

COPY . /src
WORKDIR /src
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/${TORCH_VARIANT} \
    && pip install torch==2.13.0 -e ".[test,docs]"

# Templates at build time: the image runs offline.
RUN genbrain fetch-templates && chmod -R a+rX /opt/templateflow /opt/genbrain-cache

WORKDIR /tmp
ENTRYPOINT ["bids_genbrain"]
CMD ["--help"]
