import streamlit as st

st.title("submit")
st.info("This page is being built.")
