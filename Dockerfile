# CUDA-capable image for running a search on a GPU machine.
#   docker build -t anklealign-search .
#   docker run --gpus all -v /path/to/data:/app/data -v $PWD/runs:/app/runs anklealign-search
# The data folder holds anklealign.zip exactly as distributed; results land in /app/runs.
FROM pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY search ./search
COPY space ./space
COPY anklealign ./anklealign
# The base image brings CUDA and a torch build; the project's exact pins replace torch with the
# version the project is tested against (PyPI's Linux wheels of torch are CUDA builds).
# The study definitions ship inside the package (search/studies/); a studies/ folder mounted at /app wins.
RUN pip install ".[postgres,mysql,onnx]"
VOLUME ["/app/data", "/app/runs"]
EXPOSE 8080
ENTRYPOINT ["python", "-m", "search"]
CMD ["run", "--data", "/app/data/anklealign.zip", "--trials", "100", "--device", "cuda", "--out", "/app/runs"]
