#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ with the hand-built PV and HVM streams of the
# layout tests (each checked by `verify` first).
set -euo pipefail
cd "$(dirname "$0")/.."
RXMIGRATE_FUZZ_CORPUS=$PWD/fuzz/corpus cargo test --quiet --test stream_layouts fuzz_seeds_are_valid_streams
# A whole restore starts from the whole xl images.
mkdir -p fuzz/corpus/restore_sim
cp fuzz/corpus/verify_any/*-xl fuzz/corpus/restore_sim/
ls -l fuzz/corpus/*
