"""The leaderboard beside validation, on the Submission page: record the public (later private) score
the competition site gave a submission, see it joined to the validation macro F1 of the runs that
made it, a scatter of one against the other (can the validation split be trusted?), and the table
as CSV. Scores are kept in the submission folder (core.evaluation.leaderboard). Keys start with
``submit_``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import widgets
from core.errors import WorkbenchError
from core.evaluation import leaderboard

FLASH_KEY = "submit_leaderboard_flash"
TABLE_COLUMNS = {
    "submission": "submission", "run_name": "run", "model": "backbone", "task": "task", "val_f1": "run val F1",
    "submission_val_f1": "submission val F1", "public": "public LB", "private": "private LB", "note": "note",
}  # fmt: skip


def leaderboard_section(history: pd.DataFrame, selected: str | None, submissions_dir: Path) -> None:
    st.subheader("Leaderboard scores beside validation")
    st.caption(
        "Record what the competition's leaderboard said about a submission. Each row joins a submission to "
        "a run it predicted with and that run's best validation macro F1; an ensemble's validation F1 is "
        "the mean over its runs."
    )
    message = st.session_state.pop(FLASH_KEY, None)
    if message:
        st.success(widgets.plain(message))
    made = history[history["has_file"].astype(bool)].reset_index(drop=True)  # a failed job has nothing to score
    if made.empty:
        st.caption("No submission file yet: scores can be recorded once a prediction has written one.")
        return
    record_form(made, selected, submissions_dir)
    joined = leaderboard.joined_table(submissions_dir, submissions=made)
    st.dataframe(
        joined_view(joined),
        hide_index=True,
        column_config={
            name: st.column_config.NumberColumn(format="%.4f")
            for name in ("run val F1", "submission val F1", "public LB", "private LB")
        },
    )
    st.download_button(
        "Download the table as CSV",
        leaderboard.to_csv_text(joined),
        file_name="leaderboard.csv",
        mime="text/csv",
        key="submit_leaderboard_csv",
    )
    scores = leaderboard.submission_scores(submissions_dir)
    figure = scatter_figure(scores)
    if figure is None:
        st.caption("The scatter appears once a submission whose runs have a validation F1 has a leaderboard score.")
    else:
        st.plotly_chart(figure, key="submit_leaderboard_scatter")


def record_form(made: pd.DataFrame, selected: str | None, submissions_dir: Path) -> None:
    ids = made["id"].tolist()
    with st.form("submit_leaderboard_form"):
        c1, c2, c3, c4 = st.columns([2, 1, 1, 2])
        sub_id = c1.selectbox(
            "Submission", ids, index=ids.index(selected) if selected in ids else 0, key="submit_leaderboard_sub"
        )
        public = c2.number_input(
            "Public score",
            min_value=0.0,
            max_value=1.0,
            value=None,
            step=0.001,
            format="%.4f",
            key="submit_leaderboard_public",
        )
        private = c3.number_input(
            "Private score",
            min_value=0.0,
            max_value=1.0,
            value=None,
            step=0.001,
            format="%.4f",
            key="submit_leaderboard_private",
        )
        note = c4.text_input("Note (optional)", key="submit_leaderboard_note")
        st.caption("A score left empty keeps the one recorded before: add the private score at the end.")
        recorded = st.form_submit_button("Record scores", key="submit_leaderboard_record")
    if not recorded:
        return
    if public is None and private is None and not note.strip():
        st.error("Enter a public and/or a private leaderboard score.")
        return
    try:
        leaderboard.record_scores(
            sub_id, public=public, private=private, note=note.strip() or None, submissions_dir=submissions_dir
        )
    except WorkbenchError as err:
        widgets.error(err)
        return
    st.session_state[FLASH_KEY] = f"Recorded the leaderboard scores of {sub_id}."
    st.rerun()  # the history and the joined table were read before this record


def joined_view(joined: pd.DataFrame) -> pd.DataFrame:
    """The joined table as shown: one row per (submission, run), friendlier column names."""
    return joined[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS)


def scatter_figure(scores: pd.DataFrame) -> go.Figure | None:
    """Validation macro F1 against leaderboard F1, one point per submission and board (None when none
    has both). Submission names are escaped: plotly reads some HTML in labels."""
    fig = go.Figure()
    low, high = 1.0, 0.0
    for board, symbol in (("public", "circle"), ("private", "diamond")):
        part = scores.dropna(subset=["val_f1", board])
        if part.empty:
            continue
        x, y = part["val_f1"].astype(float).tolist(), part[board].astype(float).tolist()
        low, high = min(low, *x, *y), max(high, *x, *y)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="markers",
                name=f"{board} leaderboard",
                marker={"symbol": symbol, "size": 10},
                text=widgets.plot_labels(part["submission"]),
                hovertemplate="%{text}<br>validation F1 %{x:.4f}<br>leaderboard F1 %{y:.4f}<extra></extra>",
            )
        )
    if not fig.data:
        return None
    pad = max(0.02, (high - low) * 0.1)
    fig.add_trace(
        go.Scatter(
            x=[low - pad, high + pad],
            y=[low - pad, high + pad],
            mode="lines",
            name="equal",
            line={"dash": "dot", "color": "gray"},
            hoverinfo="skip",
        )
    )
    fig.update_layout(
        title="Validation macro F1 against leaderboard F1",
        height=420,
        xaxis_title="validation macro F1",
        yaxis_title="leaderboard F1",
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig
