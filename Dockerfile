# bids_genbrain BIDS-App image.
#   CPU:  docker build -t genbrain .
#   CUDA: docker build -t genbrain:cuda --build-arg TORCH_VARIANT=cu128 .
#   No registry / no download.pytorch.org / no TemplateFlow (built and run that way by
#   containers/check.sh, see docs/containers.md):
#         docker build -t genbrain --network host \
#           --build-arg BASE_IMAGE=genbrain-base:bookworm \
#           --build-arg TORCH_FIND_LINKS=http://127.0.0.1:8765/ --build-arg TEMPLATES=fallback .
#
# Build arguments (defaults are the public sources):
#   BASE_IMAGE        any image with python3 (3.11) and its venv module: python:3.11-slim, or
#                     the Debian image of containers/make-base-image.sh (debootstrap, no registry)
#   TORCH_VARIANT     PyTorch wheel variant of the default index (cpu, cu128 ...)
#   TORCH_INDEX_URL   index torch is installed from [https://download.pytorch.org/whl/<variant>]
#   TORCH_FIND_LINKS  instead: a folder (URL or path) holding the torch 2.13.0 wheel
#   TEMPLATES         templateflow: download MNI152NLin6Asym at build time; fallback: build the
#                     offline ICBM152 fallback (where TemplateFlow is unreachable)
#   IMAGE_TAG         the tag recorded as GeneratedBy.Container in every output
# The install line is README's set-up command (torch pinned so pip never swaps it).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ARG TORCH_FIND_LINKS=
ARG TEMPLATES=templateflow
ARG IMAGE_TAG=genbrain:latest
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    GENBRAIN_CACHE_DIR=/opt/genbrain-cache \
    GENBRAIN_TEMPLATES=${TEMPLATES} \
    MPLCONFIGDIR=/tmp/matplotlib \
    NIPYPE_NO_ET=1 \
    GENBRAIN_DOCKER_TAG=${IMAGE_TAG}

RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*

# torch first, in its own layer: code changes do not reinstall it (from a wheel folder: the
# wheel alone; its dependencies come from the index with the package below)
RUN python3 -m venv /opt/venv \
    && if [ -n "$TORCH_FIND_LINKS" ]; then \
         pip install --no-deps --no-index --find-links "$TORCH_FIND_LINKS" torch==2.13.0; \
       else \
         pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
       fi

COPY . /src
WORKDIR /src
RUN pip install torch==2.13.0 -e ".[test,docs]"

# Templates at build time: the image runs offline. The TemplateFlow skeleton is unpacked
# here too, so imports at run time (read-only image, non-root user) never write.
RUN if [ "$TEMPLATES" = fallback ]; then \
      genbrain fetch-templates --fallback --resolution 1 --resolution 2 --resolution 4; \
    else \
      genbrain fetch-templates --resolution 1 --resolution 2 --resolution 4; \
    fi \
    && python -c "import templateflow.api" \
    && chmod -R a+rX /opt/templateflow /opt/genbrain-cache \
    && useradd --create-home --uid 1000 --shell /bin/bash genbrain \
    && chmod a+rwx /home/genbrain \
    && rm -rf /tmp/* /root/.cache

ENV HOME=/home/genbrain
USER genbrain
WORKDIR /tmp
ENTRYPOINT ["bids_genbrain"]
CMD ["--help"]
