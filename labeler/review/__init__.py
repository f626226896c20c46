"""The review loop above the labels: the `labeler review` web app, the doubt pass, the monocular model it
compares against, dataset diffs and their report, the gallery and the review summary. Decisions themselves
are dataset records (labeler/dataset/decisions.py).
"""
