"""`nmdc-site run`: an executing site. Claim a job, fetch its inputs, run a command, report what happened.

How the command is run (the contract with the site's own code):

* argv: the COMMAND given after ``--``. An argument that is exactly ``{inputs}`` is replaced by the local paths
  of the job's inputs (one argument each, in the order of ``job.config.data_resources``), and ``{inputs.ROLE}``
  within an argument by the local path of the input of that role (``job.config.inputs``, for a workflow with
  inputs by role); an argument naming a role the job has no input for (an optional one) is left out. Without
  either, the paths are appended at the end.
* environment, on top of the agent's own:

  - ``NMDC_JOB_ID``, ``NMDC_OPERATION_ID``, ``NMDC_WORKFLOW_ID``;
  - ``NMDC_JOB_CONFIG``: path of a JSON file holding the job's ``config`` (workflow config + data resources);
  - ``NMDC_INPUTS``: a JSON list of the inputs' absolute local paths (same order as above);
  - ``NMDC_OUTPUT_DIR``: an empty folder; every file written there (except dot-files and ``*.part``/``*.tmp``)
    becomes an output of the execution, registered as a data resource of this site and served by the agent;
  - ``NMDC_PROGRESS_FILE``: optional; write lines ``<percent> <message>`` to it and the last one is reported as
    the operation's ``progress`` and ``message`` on the next heartbeat.
* working directory: the job's folder under the state dir; stdout and stderr go to ``command.log`` there and
  to the agent's stderr; the last lines end up in the execution's ``details``.
* exit status 0 is success; 126 and 127 (a shell's "not executable", "not found") are the site's own fault
  (the job is given back, reason ``SITE_FAULT``); anything else posts a ``failed`` execution and finishes the
  operation with error ``COMMAND_FAILED``.

While the command runs the heartbeat thread renews the lease (`heartbeat`). When the answer says
``cancel_requested`` the command's process group gets SIGTERM (SIGKILL after a grace period) and the operation
ends with error ``CANCELLED``. When it says ``paused`` the command is stopped with SIGSTOP and continued with
SIGCONT on resume; the agent does not move to its next step while paused.

Before any claim the agent checks what it can (the executable, the state dir, the API and the workflow), and
Ctrl-C or SIGTERM stops it within 5 s at any point, the claim kept in the state dir (or given back with
``--release-on-exit``).

The modules, one concern each: `config` (the options), `state` (what the agent remembers), `inputs`
(download and verify), `command` (the command's contract and its supervision), `heartbeat` (the lease),
`job` (one claimed job's steps and their report), `loop` (start-up checks, finding work, resuming).
"""
