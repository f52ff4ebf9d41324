"""Per-trial resources: GPUs present are shared as fractions; requests no node can meet are refused up front."""
import dataclasses

import pytest
import ray

pytestmark = pytest.mark.slow  # starts a local Ray

from ablation.driver import check_resources, with_gpu_share
from ablation.study import StudyError, load_study


@pytest.fixture(scope="module")
def cluster_with_one_gpu():
    # Ray accepts a declared GPU count without a physical GPU: enough to check the placement arithmetic.
    if ray.is_initialized():  # the test process's Ray of earlier in-process studies (tests/studies.py)
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR", address="local")
    yield
    ray.shutdown()


def test_gpu_share_and_resource_checks(cluster_with_one_gpu):
    spec = load_study("loss_comparison")
    assert "gpu" not in spec.resources
    shared = with_gpu_share(spec)
    assert shared.resources == {"cpu": 1, "gpu": 0.5}  # 2 CPUs / 1 CPU per trial = 2 trials on one GPU
    check_resources(shared)
    explicit = dataclasses.replace(spec, resources={"cpu": 2, "gpu": 0})
    assert with_gpu_share(explicit).resources == {"cpu": 2, "gpu": 0}
    with pytest.raises(StudyError, match="resources.cpu=3"):
        check_resources(dataclasses.replace(spec, resources={"cpu": 3, "gpu": 0}))
    with pytest.raises(StudyError, match="resources.gpu=2"):
        check_resources(dataclasses.replace(spec, resources={"cpu": 1, "gpu": 2}))


def test_a_process_connected_to_ray_joins_it_and_refuses_another_address(cluster_with_one_gpu):
    from ablation.ray_start import start_ray
    assert start_ray(None, 8) is False  # joined (the study leaves this Ray running), whatever num_cpus says
    assert ray.is_initialized()
    with pytest.raises(StudyError, match="already connected to the Ray at .*, not 127.0.0.1:1: call ray.shutdown"):
        start_ray("127.0.0.1:1", None)
