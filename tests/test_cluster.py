"""Site configs, SLURM helpers and cluster pools (hpcmix.orchestrate.sites, .slurm, .pools).

Fast tests need no cluster. ``@pytest.mark.slurm`` tests need the single-node
SLURM from ``.ci/slurm/start.sh``; they skip when ``sinfo`` cannot reach a
controller, unless ``HPCMIX_REQUIRE_SLURM=1`` (CI), where they fail instead.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

import hpcmix
from hpcmix.orchestrate import (
    JobSubmissionError,
    SiteConfigError,
    WorkerTimeoutError,
    available_sites,
    load_site,
    make_clusters,
)
from hpcmix.orchestrate.slurm import (
    lifetime_args,
    parse_scontrol_job,
    slurm_job_gres,
    walltime_seconds,
    worker_info,
)

REPO = Path(hpcmix.__file__).resolve().parents[1]
PACKAGED_SITES = Path(hpcmix.__file__).resolve().parent / "sites"

SLURM_SITE = """\
kind: slurm
cpu:
  partition: debug
  cores: 2
  memory: 2GB
"""


def _write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------
# site configs: loading and validation (no cluster)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["local", "slurm", "ci-slurm"])
def test_bundled_sites_load(name):
    assert name in available_sites()
    site = load_site(name)
    assert site.name == name
    assert site.kind == ("local" if name == "local" else "slurm")
    assert site.path == str(PACKAGED_SITES / f"{name}.yaml")


def test_default_site_is_local(monkeypatch):
    monkeypatch.delenv("HPCMIX_SITE", raising=False)
    site = load_site()
    assert site.name == "local" and site.kind == "local"
    assert site.cpu["n_workers"] is None and site.cpu["threads_per_worker"] == 1
    assert site.gpu is None


def test_ci_slurm_site_pools():
    site = load_site("ci-slurm")
    assert site.cpu["queue"] == "debug" and site.cpu["cores"] == 1 and site.cpu["gres"] is None
    assert site.gpu["queue"] == "gpu" and site.gpu["gres"] == "gpu:1"
    assert site.cpu["minimum_jobs"] <= site.cpu["maximum_jobs"]


def test_site_by_path_and_search_path(tmp_path, monkeypatch):
    p = _write(tmp_path, SLURM_SITE, "mysite.yaml")
    assert load_site(p).cpu["memory"] == "2GB"
    assert load_site(str(p)).name == "mysite"
    monkeypatch.setenv("HPCMIX_SITE_PATH", str(tmp_path))
    site = load_site("mysite")
    assert site.path == str(p.resolve())
    assert "mysite" in available_sites()
    # defaults filled in
    assert site.cpu["processes"] == 1 and site.cpu["walltime"] == "01:00:00"
    assert site.python  # the submitting Python by default


def test_unknown_key(tmp_path):
    p = _write(tmp_path, SLURM_SITE + "  corse: 4\n")
    with pytest.raises(ValueError) as ei:
        load_site(p)
    msg = str(ei.value)
    assert isinstance(ei.value, SiteConfigError)
    assert str(p.resolve()) in msg
    assert "unknown field 'cpu.corse'" in msg and "4" in msg
    assert "allowed fields" in msg and "cores" in msg


def test_unknown_top_level_key(tmp_path):
    p = _write(tmp_path, SLURM_SITE + "gpus: 2\n")
    with pytest.raises(SiteConfigError, match=r"unknown field 'gpus' \(value 2\)"):
        load_site(p)


def test_wrong_type(tmp_path):
    p = _write(tmp_path, SLURM_SITE.replace("cores: 2", "cores: two"))
    with pytest.raises(ValueError) as ei:
        load_site(p)
    msg = str(ei.value)
    assert str(p.resolve()) in msg
    assert "field 'cpu.cores' has value 'two' (str)" in msg
    assert "allowed: an integer >= 1" in msg


@pytest.mark.parametrize(
    ("line", "field", "allowed"),
    [
        ("  memory: lots\n", "cpu.memory", "a size like"),
        ("  walltime: 1 hour\n", "cpu.walltime", "SLURM time"),
        ("  job_extra_directives: --qos=x\n", "cpu.job_extra_directives", "a list of strings"),
        ("  minimum_jobs: -1\n", "cpu.minimum_jobs", "an integer >= 0"),
        ("  lifetime: soon\n", "cpu.lifetime", "'auto', or a duration"),
    ],
)
def test_wrong_values(tmp_path, line, field, allowed):
    text = SLURM_SITE.replace("  memory: 2GB\n", "") + line
    if "memory" not in line:
        text += "  memory: 2GB\n"
    p = _write(tmp_path, text)
    with pytest.raises(SiteConfigError) as ei:
        load_site(p)
    assert f"field '{field}'" in str(ei.value) and allowed in str(ei.value)


def test_wrong_kind(tmp_path):
    p = _write(tmp_path, SLURM_SITE.replace("kind: slurm", "kind: pbs"))
    with pytest.raises(SiteConfigError, match=r"field 'kind' has value 'pbs'.*'local' or 'slurm'"):
        load_site(p)


def test_missing_required_key(tmp_path):
    p = _write(tmp_path, SLURM_SITE.replace("  memory: 2GB\n", ""))
    with pytest.raises(ValueError) as ei:
        load_site(p)
    msg = str(ei.value)
    assert str(p.resolve()) in msg and "missing required field 'cpu.memory'" in msg


def test_missing_kind_and_cpu(tmp_path):
    with pytest.raises(SiteConfigError, match="missing required field 'kind'"):
        load_site(_write(tmp_path, "cpu: {}\n"))
    with pytest.raises(SiteConfigError, match="missing required field 'cpu'"):
        load_site(_write(tmp_path, "kind: local\n"))


def test_cross_field_checks(tmp_path):
    p = _write(tmp_path, SLURM_SITE + "  minimum_jobs: 3\n  maximum_jobs: 2\n")
    with pytest.raises(SiteConfigError, match=r"'cpu.maximum_jobs' has value 2.*>= 'cpu.minimum_jobs' \(3\)"):
        load_site(p)
    p = _write(tmp_path, SLURM_SITE + "  walltime: '01:00:00'\n  lifetime: 2h\n")
    with pytest.raises(SiteConfigError, match="shorter than 'cpu.walltime'"):
        load_site(p)
    p = _write(tmp_path, SLURM_SITE + "  queue: other\n")
    with pytest.raises(SiteConfigError, match="disagree"):
        load_site(p)
    p = _write(tmp_path, SLURM_SITE + "gpu:\n  cores: 1\n  memory: 1GB\n"
               "  job_extra_directives: ['--gres=gpu:2']\n")
    with pytest.raises(SiteConfigError, match="no --gres line when 'gpu.gres' is set"):
        load_site(p)


def test_malformed_yaml(tmp_path):
    p = _write(tmp_path, "kind: slurm\ncpu:\n  cores: [1, 2\n  memory: 1GB\n")
    with pytest.raises(ValueError) as ei:
        load_site(p)
    msg = str(ei.value)
    assert str(p.resolve()) in msg and "not valid YAML" in msg and "line" in msg


def test_not_a_mapping(tmp_path):
    with pytest.raises(SiteConfigError, match="must be a YAML mapping"):
        load_site(_write(tmp_path, "- kind: local\n"))


def test_unknown_site_name():
    with pytest.raises(ValueError) as ei:
        load_site("no-such-site")
    msg = str(ei.value)
    assert "unknown site 'no-such-site'" in msg
    assert "local" in msg and "ci-slurm" in msg  # what is allowed
    with pytest.raises(SiteConfigError, match="no such file"):
        load_site("/nonexistent/site.yaml")


def test_keyword_overrides_win_and_are_validated():
    site = load_site("ci-slurm")
    over = site.with_overrides(cpu={"memory": "2GB", "queue": "down"}, gpu=False)
    assert over.cpu["memory"] == "2GB" and over.cpu["queue"] == "down"
    assert over.cpu["cores"] == site.cpu["cores"]  # the rest still from the file
    assert over.gpu is None
    with pytest.raises(SiteConfigError, match=r"keyword overrides.*'gpu.cores' has value 0"):
        site.with_overrides(gpu={"cores": 0})
    with pytest.raises(SiteConfigError, match="unknown field 'cpu.queues'"):
        site.with_overrides(cpu={"queues": "x"})


def test_walltime_and_lifetime():
    assert walltime_seconds("01:00:00") == 3600
    assert walltime_seconds("2-00:00:00") == 172800
    assert walltime_seconds("1-12") == 129600
    assert walltime_seconds("30") == 1800
    assert walltime_seconds("10:30") == 630
    # auto: margin 10 % of the walltime (1..10 min), stagger half of it
    assert lifetime_args("01:00:00", "auto", None) == ["--lifetime", "3240s", "--lifetime-stagger", "180s"]
    assert lifetime_args("04:00:00", "auto", None) == ["--lifetime", "13800s", "--lifetime-stagger", "300s"]
    assert lifetime_args("01:00:00", "55m", "4m") == ["--lifetime", "3300s", "--lifetime-stagger", "240s"]
    assert lifetime_args("01:00:00", None, None) == []


SCONTROL_GPU_JOB = """\
JobId=3 JobName=wrap
   JobState=RUNNING Reason=None Dependency=(null)
   Partition=gpu AllocNode:Sid=localhost:2108
   NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:*
   TRES=cpu=1,mem=256M,node=1,billing=1
   JOB_GRES=gpu:1
     Nodes=vm CPU_IDs=0 Mem=256 GRES=gpu:1(IDX:0)
   TresPerNode=gres:gpu:1
"""


def test_parse_scontrol_job():
    info = parse_scontrol_job(SCONTROL_GPU_JOB)
    assert info["job_id"] == "3" and info["partition"] == "gpu"
    assert info["job_gres"] == "gpu:1" and info["node_gres"] == ["gpu:1(IDX:0)"]
    assert info["gpus"] == 1
    typed = SCONTROL_GPU_JOB.replace("JOB_GRES=gpu:1", "JOB_GRES=gpu:a100:2")
    assert parse_scontrol_job(typed)["gpus"] == 2
    none = SCONTROL_GPU_JOB.replace("JOB_GRES=gpu:1", "JOB_GRES=(null)").replace(
        " GRES=gpu:1(IDX:0)", "")
    assert parse_scontrol_job(none)["gpus"] == 0
    tres_only = none.replace("billing=1", "billing=1,gres/gpu=4")
    assert parse_scontrol_job(tres_only)["gpus"] == 4


def test_slurm_job_script_from_site(tmp_path):
    """The SLURMCluster job scripts, built without submitting anything."""
    with make_clusters(
        "ci-slurm",
        cpu={"minimum_jobs": 0, "account": "physics", "log_directory": str(tmp_path)},
        gpu={"minimum_jobs": 0, "walltime": "02:00:00", "log_directory": str(tmp_path)},
        python="/opt/py/bin/python3",
        wait=False,
        preflight=False,
    ) as pools:
        cpu_script = pools.cpu.cluster.job_script()
        gpu_script = pools.gpu.cluster.job_script()
        assert pools.cpu.job_ids == [] and pools.gpu.job_ids == []
    assert "#SBATCH -p debug" in cpu_script and "#SBATCH -A physics" in cpu_script
    assert "#SBATCH --cpus-per-task=1" in cpu_script and "--gres" not in cpu_script
    assert "/opt/py/bin/python3 -m distributed.cli.dask_worker" in cpu_script
    assert "--lifetime 1620s --lifetime-stagger 90s" in cpu_script  # 00:30:00, auto
    assert "#SBATCH -p gpu" in gpu_script and "#SBATCH --gres=gpu:1" in gpu_script
    assert "#SBATCH -t 02:00:00" in gpu_script
    assert "--lifetime 6600s --lifetime-stagger 300s" in gpu_script  # 02:00:00, auto
    assert f"#SBATCH -e {tmp_path}/hpcmix-gpu-%J.err" in gpu_script


# --------------------------------------------------------------------------
# TLS: a scheduler no other user can reach (SLURMCluster's scheduler runs here,
# in the client's process, so these need no SLURM daemons)
# --------------------------------------------------------------------------
def _refused(address, security=None) -> bool:
    from distributed import Client

    try:
        client = Client(address, security=security, timeout="3s")
    except (OSError, TimeoutError):
        return True
    client.close()
    return False


def _port_open(host, port) -> bool:
    with socket.socket() as sock:
        sock.settimeout(3)
        return sock.connect_ex((host, port)) == 0


def test_slurm_pools_speak_tls_and_refuse_plain_tcp(tmp_path):
    import stat
    from urllib.parse import urlsplit

    from hpcmix.orchestrate.executor import OnPools

    from distributed.security import Security

    tls = tmp_path / "tls"
    with make_clusters("ci-slurm", cpu={"minimum_jobs": 0, "log_directory": str(tmp_path), "tls_directory": str(tls)},
                       gpu=False, wait=False, preflight=False) as pools:
        address = pools.cpu.cluster.scheduler_address
        assert address.startswith("tls://")
        # the workers' certificate and key, written where their jobs read them, for this user only
        script = pools.cpu.cluster.job_script()
        files = {flag: script.split(flag, 1)[1].split()[0] for flag in ("--tls-ca-file", "--tls-cert", "--tls-key")}
        for path in files.values():
            assert os.path.dirname(path) == str(tls) and os.path.exists(path)
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        assert stat.S_IMODE(os.stat(tls).st_mode) == 0o700
        assert pools.cpu.client.scheduler_info()["address"] == address   # the pool's own client gets in
        assert _refused(address.replace("tls://", "tcp://"))             # a plain-TCP client does not
        assert _refused(address, Security.temporary())                   # nor one with another CA's certificate
        # the dashboard (no authentication of its own) listens on the login node's localhost only ...
        link = urlsplit(pools.cpu.dashboard_link)
        assert _port_open("127.0.0.1", link.port)
        if not ipaddress.ip_address(socket.gethostbyname(link.hostname)).is_loopback:   # the node's own address
            assert not _port_open(link.hostname, link.port)
        # ... and hpcmix run prints the tunnel to it
        (line,) = OnPools(pools).dashboard_lines()
        assert f"ssh -N -L {link.port}:localhost:{link.port} " in line
    assert not any(os.path.exists(p) for p in files.values())            # removed with the cluster


def test_tls_can_be_turned_off(tmp_path):
    with make_clusters("ci-slurm", cpu={"minimum_jobs": 0, "log_directory": str(tmp_path), "tls": False},
                       gpu=False, wait=False, preflight=False) as pools:
        assert pools.cpu.cluster.scheduler_address.startswith("tcp://")
        assert "--tls-key" not in pools.cpu.cluster.job_script()


def test_an_unusable_tls_directory_is_a_clear_error(tmp_path):
    from hpcmix.orchestrate.security import TLSSetupError

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(TLSSetupError) as ei:   # (a file where a folder should be: refused even as root)
        make_clusters("ci-slurm", cpu={"minimum_jobs": 0, "log_directory": str(tmp_path),
                                       "tls_directory": str(blocker / "tls")}, gpu=False, wait=False, preflight=False)
    msg = str(ei.value)
    assert f"{blocker / 'tls'}" in msg and "is not usable" in msg and "site 'ci-slurm'" in msg
    assert "tls_directory" in msg and "tls: false" in msg


def test_the_dashboard_on_localhost_gets_an_ssh_tunnel_line():
    from hpcmix.orchestrate.security import dashboard_is_local, tunnel_command

    assert dashboard_is_local("localhost:8787") and dashboard_is_local("127.0.0.1:0")
    assert not dashboard_is_local(":8787") and not dashboard_is_local("0.0.0.0:8787")
    line = tunnel_command("localhost:0", "http://10.1.2.3:40123/status", host="login1.example.org")
    assert line.startswith("ssh -N -L 40123:localhost:40123 login1.example.org")
    assert "http://localhost:40123/status" in line
    assert tunnel_command(":8787", "http://10.1.2.3:8787/status") is None


# --------------------------------------------------------------------------
# LocalCluster pools
# --------------------------------------------------------------------------
def test_local_pools_round_trip():
    with make_clusters("local", cpu={"n_workers": 2, "dashboard_address": ":0"}) as pools:
        assert pools.gpu is None and pools.training is pools.cpu
        assert pools.cpu.n_workers() == 2
        assert pools.cpu.client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
        info = pools.cpu.client.submit(worker_info, pure=False).result(timeout=60)
        assert info["pid"] != os.getpid()  # ran in a worker process
        text = pools.describe()
        assert "site 'local'" in text and "cpu: LocalCluster" in text
        client = pools.cpu.client
    assert client.status == "closed"


def test_local_gpu_pool_is_its_own_cluster():
    with make_clusters(
        "local",
        cpu={"n_workers": 1, "processes": False, "dashboard_address": ":0"},
        gpu={"n_workers": 1, "processes": False},
    ) as pools:
        assert pools.gpu is not None and pools.training is pools.gpu
        assert pools.gpu.cluster is not pools.cpu.cluster
        assert pools.gpu.cluster.scheduler_address != pools.cpu.cluster.scheduler_address
        assert pools.gpu.client.submit(max, [4, 2]).result(timeout=60) == 4
        assert "gpu: LocalCluster" in pools.describe()


def test_local_wait_timeout_is_clear():
    with make_clusters("local", cpu={"n_workers": 1, "processes": False,
                                     "dashboard_address": ":0"}) as pools:
        t0 = time.monotonic()
        with pytest.raises(WorkerTimeoutError) as ei:
            pools.cpu.wait_for_workers(3, timeout=0.5)
        assert time.monotonic() - t0 < 10
        msg = str(ei.value)
        assert "site 'local'" in msg and "pool 'cpu'" in msg
        assert "1 of 3 worker(s)" in msg and "after waiting" in msg


# --------------------------------------------------------------------------
# SLURM (the single-node cluster from .ci/slurm/start.sh)
# --------------------------------------------------------------------------
def _slurm_overrides(log_dir: Path) -> dict:
    # Workers import hpcmix even when it is not pip-installed (source checkout).
    prologue = [f"export PYTHONPATH={REPO}${{PYTHONPATH:+:$PYTHONPATH}}"]
    return {"log_directory": str(log_dir), "job_script_prologue": prologue}


@pytest.fixture(scope="module")
def ci_pools(slurm_cluster, tmp_path_factory):
    logs = tmp_path_factory.mktemp("slurm-logs")
    over = _slurm_overrides(logs)
    with make_clusters("ci-slurm", cpu=over, gpu=over, wait_timeout=120) as pools:
        yield pools


def _squeue_state(job_id: str) -> str:
    r = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%T", "-j", job_id],
                       capture_output=True, text=True, timeout=20)
    return r.stdout.strip() or "GONE"


@pytest.mark.slurm
def test_slurm_cpu_worker_runs_in_a_slurm_job(ci_pools):
    info = ci_pools.cpu.client.submit(worker_info, pure=False).result(timeout=120)
    job_id = info["slurm_job_id"]
    assert job_id, f"worker is not inside a SLURM job: {info}"
    assert job_id in ci_pools.cpu.job_ids
    assert info["env"]["SLURM_JOB_PARTITION"] == "debug"
    assert _squeue_state(job_id) == "RUNNING"
    assert "cpu: SLURMCluster" in ci_pools.describe()


@pytest.mark.slurm
def test_slurm_gpu_worker_holds_gres_gpu(ci_pools):
    # Ask SLURM itself (scontrol show job -d $SLURM_JOB_ID on the worker).
    gres = ci_pools.gpu.client.submit(slurm_job_gres, pure=False).result(timeout=120)
    assert gres["job_id"] in ci_pools.gpu.job_ids
    assert gres["job_state"] == "RUNNING" and gres["partition"] == "gpu"
    assert gres["gpus"] == 1, gres["raw"]
    assert gres["job_gres"] == "gpu:1" or any(g.startswith("gpu:1") for g in gres["node_gres"])
    # and the CPU pool's job holds no GPU
    cpu_gres = ci_pools.cpu.client.submit(slurm_job_gres, pure=False).result(timeout=120)
    assert cpu_gres["gpus"] == 0 and cpu_gres["partition"] == "debug", cpu_gres["raw"]
    info = ci_pools.gpu.client.submit(worker_info, pure=False).result(timeout=120)
    assert "CUDA_VISIBLE_DEVICES" in info["env"]  # set by SLURM for the gres


@pytest.mark.slurm
@pytest.mark.tensorflow
def test_slurm_gpu_job_whose_gpu_tensorflow_cannot_see_warns_or_stops(ci_pools):
    """The CI GPU is a stand-in (gres on /dev/null): SLURM allocates it, TensorFlow sees none."""
    from hpcmix.train.device import GPUNotVisibleError, check_training_device

    # the ci-slurm site says gpu_check: warn; it reaches the job's environment, the check reports and goes on
    report = ci_pools.gpu.client.submit(check_training_device, pure=False).result(timeout=180)
    assert report["policy"] == "warn" and report["allocated"] and report["sees"] == "CPU"
    assert report["mismatch"] is True and report["backend"] == "tensorflow"
    # a real site's default, 'error': stop before training, naming the install
    with pytest.raises(GPUNotVisibleError) as ei:
        ci_pools.gpu.client.submit(check_training_device, "error", pure=False).result(timeout=180)
    msg = str(ei.value)
    assert f"SLURM gave this job GPU {report['allocated']}" in msg and "tensorflow[and-cuda]" in msg
    assert "LD_LIBRARY_PATH" in msg and "gpu_check: warn" in msg
    # the CPU pool's job holds no GPU: nothing to check
    assert ci_pools.cpu.client.submit(check_training_device, "error", pure=False).result(timeout=180)["mismatch"] is False


@pytest.mark.slurm
@pytest.mark.parametrize("preflight", [True, False], ids=["preflight", "at-submit"])
def test_slurm_unknown_partition_shows_slurm_message(slurm_cluster, tmp_path, preflight):
    t0 = time.monotonic()
    with pytest.raises(JobSubmissionError) as ei:
        make_clusters("ci-slurm", cpu={**_slurm_overrides(tmp_path), "partition": "no-such-partition"},
                      gpu=False, wait_timeout=30, preflight=preflight)
    msg = str(ei.value)
    assert time.monotonic() - t0 < 30
    assert "pool 'cpu'" in msg and "no-such-partition" in msg
    assert "Invalid partition name specified" in msg  # SLURM's own words
    assert "sbatch: error: invalid partition specified: no-such-partition" in msg


@pytest.mark.slurm
def test_slurm_job_larger_than_node_is_rejected(slurm_cluster, tmp_path):
    with pytest.raises(JobSubmissionError, match="Requested node configuration is not available"):
        make_clusters("ci-slurm", cpu={**_slurm_overrides(tmp_path), "memory": "64TB"}, gpu=False)


@pytest.mark.slurm
def test_slurm_workers_that_never_arrive_time_out(slurm_cluster, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(WorkerTimeoutError) as ei:
        make_clusters("ci-slurm", cpu={**_slurm_overrides(tmp_path), "partition": "down"},
                      gpu=False, wait_timeout=5)
    waited = time.monotonic() - t0
    msg = str(ei.value)
    assert isinstance(ei.value, TimeoutError)
    assert waited < 30, f"took {waited:.0f} s"
    assert "site 'ci-slurm'" in msg and "pool 'cpu'" in msg
    assert "0 of 1 worker(s) connected after waiting 5." in msg
    assert "squeue" in msg and "PENDING" in msg and "PartitionDown" in msg
    job_ids = [line.split(":")[0].split()[1] for line in msg.splitlines() if line.startswith("job ")]
    assert job_ids
    # the failed start cleaned up after itself: the pending job was cancelled
    for job_id in job_ids:
        deadline = time.monotonic() + 15
        while _squeue_state(job_id) == "PENDING" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _squeue_state(job_id) != "PENDING"
