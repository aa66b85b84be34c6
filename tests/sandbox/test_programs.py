"""The Docker backend's in-container programs are real files of the package, shipped as `python3 -c` source."""

from __future__ import annotations

import ast

from setuptools import find_packages

from agentops.sandbox import docker_backend, programs


def test_the_in_container_programs_are_package_files_that_a_wheel_includes():
    assert "agentops.sandbox.programs" in find_packages(include=["agentops*"])
    assert docker_backend.INIT == programs.source("init")
    assert docker_backend.KILL == programs.source("killer")
    assert docker_backend.SERVER == programs.source("command_server")


def test_each_program_compiles_as_one_source_and_defines_the_kill_loop_once():
    for name in ("init", "killer", "command_server"):
        tree = ast.parse(programs.source(name), filename=name)
        defined = [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
        assert len(defined) == len(set(defined)), f"{name} defines a function twice: {defined}"
    for name in ("killer", "command_server"):
        assert programs.source(name).count("def kill_tree(") == 1
    assert "def kill_tree(" not in programs.source("init")
