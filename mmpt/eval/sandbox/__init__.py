"""The execution engine: `mmpt execute`, how samples are judged, and the sandbox they run in.

Host side (here): `execute.py` (the command), `judging.py` (split or one process, verdicts),
`host.py` (starting a bubblewrap sandbox and sending it programs). Inside the sandbox (`inside/`,
standard library only, the only project files a sandbox sees): the zygotes, the per-program
isolation, the checker and the wire format.
"""
