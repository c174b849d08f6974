"""How `nmdc-site run` fills its command template: `{inputs}` and `{inputs.ROLE}`."""

from __future__ import annotations

from pathlib import Path

from nmdc_site.client import Job
from nmdc_site.run.command import command_argv

A, B = Path("/w/inputs/dr-1/contigs.fa"), Path("/w/inputs/dr-2/map.bam")


def test_inputs_alone_become_one_argument_each_or_are_appended():
    assert command_argv(["tool", "{inputs}", "-o", "x"], [A, B]) == ["tool", str(A), str(B), "-o", "x"]
    assert command_argv(["tool"], [A, B]) == ["tool", str(A), str(B)]


def test_a_role_names_the_path_of_its_input_within_any_argument_and_nothing_is_appended():
    argv = command_argv(
        ["bin", "--contigs={inputs.contigs}", "{inputs.mapping}", "{inputs}"],
        [A, B],
        {"contigs": A, "mapping": B},
    )
    assert argv == ["bin", f"--contigs={A}", str(B), str(A), str(B)]
    assert command_argv(["bin", "{inputs.mapping}"], [A, B], {"contigs": A, "mapping": B}) == ["bin", str(B)]


def test_an_argument_naming_a_role_the_job_lacks_is_left_out():
    argv = command_argv(["bin", "--gff={inputs.annotation}", "{inputs.contigs}"], [A], {"contigs": A})
    assert argv == ["bin", str(A)]
    # Braces that name no role are the command's own.
    assert command_argv(["awk", "{print $1}", "{inputs.contigs}"], [A], {"contigs": A}) == [
        "awk",
        "{print $1}",
        str(A),
    ]


def test_a_job_reads_its_inputs_by_role_from_its_config():
    document = {
        "id": "dr-1",
        "site_id": "d",
        "name": "c.fa",
        "url": "https://d.org/c.fa",
        "data_type": "contigs",
        "size": 1,
    }
    job = Job(
        id="job-1",
        workflow_id="w",
        status="unclaimed",
        config={"data_resources": [document], "inputs": {"contigs": document}},
    )
    assert job.inputs["contigs"].id == "dr-1"
    assert Job(id="job-2", workflow_id="w", status="unclaimed", config={"data_resources": []}).inputs == {}
