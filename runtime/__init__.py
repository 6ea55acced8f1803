"""The headless runtime: runs the same workflow JSON without ComfyUI. headless_host.py is what the nodes
get instead of ComfyUI; workflow.py reads UI and API files; workflow_checks.py and executor.py follow
ComfyUI's rules; standins.py replaces ComfyUI's core nodes; cli.py and api.py are the faces."""
