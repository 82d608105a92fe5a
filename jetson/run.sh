#!/usr/bin/env bash
# Start the biofo daemon on a Jetson with JetPack 6, or restart it on a newly built image.
#
#   jetson/run.sh                      # image biofo-jetson:latest, port 8000
#   BIOFO_IMAGE=biofo-jetson:0.2 BIOFO_PORT=8080 jetson/run.sh
#   BIOFO_MAX_RESIDENT_MODELS=200 jetson/run.sh   # a 4 GB board (jetson/README.md, "Memory")
#
# The database stays in the Docker volume "biofo" across restarts and image updates.
set -euo pipefail

image="${BIOFO_IMAGE:-biofo-jetson:latest}"
name="${BIOFO_CONTAINER:-biofo}"
port="${BIOFO_PORT:-8000}"

# The image is built on L4T R36 (JetPack 6); an R32/R35 host cannot run it.
if [[ -r /etc/nv_tegra_release ]] && ! grep -q '^# R36' /etc/nv_tegra_release; then
    echo "run.sh: this image needs JetPack 6 (L4T R36); this host reports:" >&2
    head -n 1 /etc/nv_tegra_release >&2
    exit 1
fi

# A running daemon gets SIGTERM and time to write its checkpoint before it is replaced.
if docker container inspect "$name" >/dev/null 2>&1; then
    docker stop --time 60 "$name" >/dev/null
    docker rm "$name" >/dev/null
fi

docker run --detach \
    --name "$name" \
    --runtime nvidia \
    --restart unless-stopped \
    --publish "$port:8000" \
    --volume biofo:/data \
    --volume /sys/bus/i2c/drivers:/sys/bus/i2c/drivers:ro \
    ${BIOFO_ADMIN_TOKEN:+--env BIOFO_ADMIN_TOKEN} \
    ${BIOFO_MAX_RESIDENT_MODELS:+--env BIOFO_MAX_RESIDENT_MODELS} \
    "$image"

echo "biofo is starting on port $port; follow it with: docker logs -f $name"
