# The VPP service with the simulated park on SQLite. Build: docker build -t vpp .
# Run: docker run -p 8080:8080 -v vpp-data:/data vpp
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY vpp ./vpp
COPY adapters ./adapters
COPY dispatch ./dispatch
COPY market ./market
COPY simulators ./simulators
RUN pip install --no-cache-dir . && useradd --create-home vpp && mkdir /data && chown vpp /data

USER vpp
ENV VPP_DATA_DIR=/data
EXPOSE 8080
VOLUME ["/data"]
CMD ["vpp", "serve", "--demo", "--host", "0.0.0.0", "--port", "8080"]
