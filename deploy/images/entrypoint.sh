#!/bin/sh
# The images' entrypoint: runs `modelhost "$@"`, and `modelhost serve "$@"` when the first
# argument is an option. Kubernetes replaces the image's CMD (`serve`) with a container's args, so
# a ServingRuntime that gives only KServe's arguments (--model_name=NAME --model_dir=/mnt/models
# --http_port=8080 --grpc_port=8081) must still serve; one that sets
# `command: [modelhost, serve]` does not come through here at all.
set -e
case "${1-}" in
    "") set -- serve ;;
    -h | --help | --version) ;;
    -*) set -- serve "$@" ;;
esac
exec modelhost "$@"
