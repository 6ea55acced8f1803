"""The headless runtime: runs the same workflow JSON without ComfyUI. host.py is what the nodes
get instead of ComfyUI; workflow.py reads UI and API files; validation.py and executor.py follow
ComfyUI's rules; standins.py replaces ComfyUI's core nodes; cli.py and api.py are the faces."""
