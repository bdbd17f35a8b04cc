#!/bin/sh
# Container entry point: make the demo dataset on first start, then serve the app.
# Extra arguments are passed to `streamlit run` (e.g. --server.baseUrlPath workbench).
set -eu

DEMO_DIR="${WORKBENCH_DEMO_DIR:-data/demo}"
if [ "${WORKBENCH_DEMO:-1}" != "0" ] && [ ! -e "$DEMO_DIR" ]; then
    echo "entrypoint: generating the demo dataset into $DEMO_DIR" >&2
    python -m core demo-data "$DEMO_DIR" --quiet \
        --people "${WORKBENCH_DEMO_PEOPLE:-300}" --eval-people "${WORKBENCH_DEMO_EVAL_PEOPLE:-200}"
fi

exec streamlit run app/main.py \
    --server.address 0.0.0.0 \
    --server.port 8501 \
    --server.headless true \
    --server.fileWatcherType none \
    --browser.gatherUsageStats false \
    "$@"
