import streamlit as st

st.title("augment")
st.info("This page is being built.")
