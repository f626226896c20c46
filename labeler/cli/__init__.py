"""The command line: `_app` (the app and what commands share), one module per family of commands, and
`main` (the entry point that imports them all). Nothing here is imported by the layers below.
"""
