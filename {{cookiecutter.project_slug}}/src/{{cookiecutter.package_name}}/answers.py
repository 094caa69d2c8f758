"""The template answers this project was rendered with (also in .cookiecutter.json).

Defaults that depend on the answers read them from here: the toy data writer and the test helpers.
"""

TASK_TYPE = "{{ cookiecutter.task_type }}"
{%- set parts = cookiecutter.modality.split("+") %}
MODALITIES: tuple[str, ...] = ({{ parts | map("tojson") | join(", ") }}{{ "," if parts | length == 1 }})
FUSION = "{{ cookiecutter.fusion }}"
