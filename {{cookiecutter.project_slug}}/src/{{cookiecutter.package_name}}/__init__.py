"""{{ cookiecutter.description }}"""

__version__ = "0.1.0"
# The cookiecutter template version this project was rendered from (answers: .cookiecutter.json).
__template_version__ = "{{ cookiecutter._template_version }}"
