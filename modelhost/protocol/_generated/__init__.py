"""Generated gRPC code; do not edit: run scripts/generate_protos.sh"""
