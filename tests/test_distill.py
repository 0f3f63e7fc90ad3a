"""Distillation as recovery (issue 26, part 1): the loss of Hinton et al. 2015, the teacher that
``fit`` runs without training it, and the teacher the runner takes (the model entering a domain's
first compressing stage), keys the cache on, and gives back to a resumed trial."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from search.cli import main
from search.spec.load import parse_spec
from search.spec.to_plan import plan_for
from tests.conftest import SOURCE, TARGET
from tests.tiny_spec import tiny_spec
from trainables.errors import FrontierError
from trainables.models import build_model, rebuild
from trainables.pipeline.cache import StageCache, stage_key, state_hash
from trainables.pipeline.plan import EPruneStep, Plan, PruneBudget, PruneStep, ShareStep, make_plan
from trainables.pipeline.run import _restore, _write_checkpoint, frozen_copy, run_plan, run_stages, teacher_points
from trainables.stage import Context
from trainables.stages.benchmark import BenchmarkConfig
from trainables.stages.dense import DenseConfig
from trainables.stages.epruning import EPruneSchedule, EPruningConfig, epruning
from trainables.stages.gradual import GradualConfig, GradualPrune, gradual_prune
from trainables.stages.share import RetrainConfig, Share, ShareConfig, _output_loss
from trainables.stages.transfer import TransferConfig
from trainables.train import DistillConfig, OptimConfig, distillation_loss, fit, soft_target_loss

FAST = BenchmarkConfig(warmup=1, runs=3)
ON = {"weight": 1.0, "temperature": 4.0}


# --- the loss -------------------------------------------------------------------------------------


def logits(seed: int, n: int = 8, classes: int = 5) -> torch.Tensor:
    return torch.randn(n, classes, generator=torch.Generator().manual_seed(seed)) * 3


def test_the_loss_is_cross_entropy_at_weight_0_the_soft_term_at_1_and_their_mix_between() -> None:
    student, teacher, y = logits(0), logits(1), torch.arange(8) % 5
    assert torch.equal(distillation_loss(student, y, teacher, DistillConfig(weight=0)),
                       nn.functional.cross_entropy(student, y))
    assert torch.equal(distillation_loss(student, y, None, DistillConfig(weight=0)), nn.functional.cross_entropy(student, y))
    for t in (1.0, 4.0):
        # T^2 * sum_c p_t,c (log p_t,c - log p_s,c), averaged over the batch, written out
        p_t, log_p_s = (teacher / t).softmax(1), (student / t).log_softmax(1)
        by_hand = t * t * (p_t * (p_t.log() - log_p_s)).sum(1).mean()
        soft = distillation_loss(student, None, teacher, DistillConfig(weight=1, temperature=t))
        assert soft == pytest.approx(float(by_hand), rel=1e-5)
        mixed = distillation_loss(student, y, teacher, DistillConfig(weight=0.3, temperature=t))
        assert mixed == pytest.approx(0.7 * float(nn.functional.cross_entropy(student, y)) + 0.3 * float(by_hand), rel=1e-5)
    assert float(soft_target_loss(student, student.clone(), 4.0)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="weight 0.5 < 1 needs labels"):
        distillation_loss(student, None, teacher, DistillConfig(weight=0.5))
    with pytest.raises(ValueError, match="weight 0.5 > 0 needs the teacher's logits"):
        distillation_loss(student, y, None, DistillConfig(weight=0.5))


def test_no_gradient_reaches_the_teacher_and_the_student_gets_one() -> None:
    student, teacher = logits(0).requires_grad_(), logits(1).requires_grad_()
    distillation_loss(student, torch.arange(8) % 5, teacher, DistillConfig(weight=0.5)).backward()
    assert teacher.grad is None and student.grad is not None and student.grad.abs().sum() > 0


def test_the_unlabeled_retraining_loss_is_the_soft_term_at_temperature_1_bit_for_bit() -> None:
    student, teacher = logits(2), logits(3)
    before = nn.functional.kl_div(student.log_softmax(1), teacher.log_softmax(1), log_target=True, reduction="batchmean")
    assert torch.equal(_output_loss(student, teacher, "kl"), before), "retrain.loss: kl computes as it did"


def test_the_config_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="weight"):
        DistillConfig(weight=1.5)
    with pytest.raises(ValueError, match="temperature"):
        DistillConfig(temperature=0)
    with pytest.raises(ValueError, match="extra"):
        DistillConfig(alpha=0.5)


# --- fit ------------------------------------------------------------------------------------------


def tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def tiny_loader(n: int = 48) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g))
    return DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))


def test_fit_runs_the_teacher_once_a_batch_in_eval_mode_and_leaves_it_bit_identical() -> None:
    teacher = tiny_net(1).train()  # fit puts it in eval mode: its batch-norm statistics must not move
    before = copy.deepcopy(teacher.state_dict())
    calls = []
    teacher.register_forward_hook(lambda module, inputs, output: calls.append((module.training, torch.is_grad_enabled())))
    student = tiny_net(0)
    start = copy.deepcopy(student.state_dict())
    fit(student, tiny_loader(), None, OptimConfig(name="sgd", lr=0.1), 2, teacher=teacher, distill=DistillConfig(weight=0.5))
    assert calls == [(False, False)] * 6, "one forward per batch (3 batches x 2 epochs), in eval mode, without gradients"
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items()), "the teacher is untouched"
    assert all(p.grad is None for p in teacher.parameters())
    assert not all(torch.equal(start[k], v) for k, v in student.state_dict().items()), "the student trained"


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; torch sees none")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, needs_cuda])])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_teacher_runs_in_the_training_precision_and_layout(device: str, precision: str) -> None:
    teacher, seen = tiny_net(1).to(device), []
    teacher.register_forward_hook(lambda module, inputs, output: seen.append(
        (output.dtype, inputs[0].device.type, module[0].weight.is_contiguous(memory_format=torch.channels_last))))
    result = fit(tiny_net(0).to(device), tiny_loader(), None, OptimConfig(precision=precision), 1, device=device,
                 teacher=teacher, distill=DistillConfig(weight=0.5))
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    assert result.precision == precision and seen == [(dtype, device, device == "cuda")] * 3
    assert all(p.dtype == torch.float32 for p in teacher.parameters()), "autocast leaves the weights float32"
    assert teacher[0].weight.is_contiguous(), "channels-last (a GPU's) only while training"


def test_fit_distills_deterministically_and_differently_from_plain_training() -> None:
    def trained(distill: DistillConfig | None, teacher_seed: int = 1) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        student = tiny_net(0)
        fit(student, tiny_loader(), None, OptimConfig(name="sgd", lr=0.1), 2, teacher=tiny_net(teacher_seed), distill=distill)
        return student.state_dict()

    plain, taught = trained(None), trained(DistillConfig(weight=0.8))
    assert all(torch.equal(plain[k], v) for k, v in trained(DistillConfig(weight=0)).items()), "weight 0: plain, teacher unused"
    assert all(torch.equal(taught[k], v) for k, v in trained(DistillConfig(weight=0.8)).items()), "same seed, same result"
    assert not torch.equal(plain["5.weight"], taught["5.weight"])
    assert not torch.equal(trained(DistillConfig(weight=0.8), teacher_seed=2)["5.weight"], taught["5.weight"])


def test_fit_needs_a_teacher_when_distilling_and_another_module_than_the_student() -> None:
    student = tiny_net(0)
    with pytest.raises(ValueError, match=r"distill.weight 0.5 > 0 needs a teacher but got None"):
        fit(student, tiny_loader(), None, OptimConfig(), 1, distill=DistillConfig(weight=0.5))
    with pytest.raises(ValueError, match="teacher must be another module"):
        fit(student, tiny_loader(), None, OptimConfig(), 1, teacher=student, distill=DistillConfig(weight=0.5))


# --- the gradual pruning stage --------------------------------------------------------------------


def random_splits(n: int = 128, classes: int = 4, size: int = 32):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)

    class Splits:
        train, val, test = TensorDataset(x, y), TensorDataset(x[:64], y[:64]), TensorDataset(x[:64], y[:64])

    return Splits


def test_gradual_prune_with_distillation_differs_from_without_and_repeats_for_a_seed() -> None:
    splits, dense = random_splits(), build_model("small_resnet", 4)

    def pruned(weight: float) -> dict[str, torch.Tensor]:
        cfg = GradualConfig(final=0.5, epochs=1, recover_epochs=1, batch_size=32, frequency=2,
                            distill={"weight": weight, "temperature": 2.0})
        teacher = frozen_copy(dense)
        model, _ = gradual_prune(copy.deepcopy(dense), splits, cfg, seed=3, teacher=teacher)
        assert all(torch.equal(dense.state_dict()[k], v) for k, v in teacher.state_dict().items())
        return model.state_dict()

    plain, taught = pruned(0.0), pruned(0.7)
    assert all(torch.equal(taught[k], v) for k, v in pruned(0.7).items()), "deterministic for a seed"
    assert any(not torch.equal(plain[k], taught[k]) for k in plain), "distillation changed the recovery"


class Augmentable(TensorDataset):
    augment = None  # what an ImageDataset has; a TensorDataset's items ignore it


def test_epruning_distills_in_its_one_training_run_from_the_teacher_it_is_given() -> None:
    splits, dense = random_splits(n=64), build_model("small_resnet", 4)
    splits.train = Augmentable(*splits.train.tensors)  # EPruning sets the training split's augmentation

    def pruned(weight: float, teacher: nn.Module) -> dict[str, torch.Tensor]:
        schedule = EPruneSchedule(epochs=1, recover_epochs=1, batch_size=32, distill={"weight": weight})
        model, _ = epruning(copy.deepcopy(dense), splits, EPruningConfig(population=4), schedule, sparsity=0.5,
                            seed=1, teacher=teacher)
        return model.state_dict()

    teacher = frozen_copy(dense)
    taught = pruned(0.5, teacher)
    assert all(torch.equal(dense.state_dict()[k], v) for k, v in teacher.state_dict().items())
    assert same_state(taught, pruned(0.5, frozen_copy(dense))), "deterministic for a seed"
    assert not same_state(taught, pruned(0.0, teacher)), "distillation changed the training"
    torch.manual_seed(7)
    assert not same_state(taught, pruned(0.5, frozen_copy(build_model("small_resnet", 4)))), "and it follows the teacher"


# --- where the teacher comes from -----------------------------------------------------------------


def tiny_plan(order: str, *, s1=None, s2=None, distill: dict | None = None, quantize: str = "none",
              retrain: RetrainConfig | None = None, method: str = "gradual") -> Plan:
    return make_plan(
        order=order, s1=s1, s2=s2, seed=0, source=SOURCE, target=TARGET,
        dense=DenseConfig(model="small_resnet", epochs=1, batch_size=64),
        transfer=TransferConfig(epochs=1, batch_size=64),
        prune=PruneBudget(epochs=1, recover_epochs=0, frequency=4, batch_size=64, method=method,
                          distill=distill or {}),
        benchmark=FAST, quantize=quantize, retrain=retrain,
    )


def test_each_domain_is_taught_by_the_model_entering_its_first_compressing_stage() -> None:
    labeled = RetrainConfig(mode="labeled", distill=ON)
    assert teacher_points(tiny_plan("PA", s2=[0.4, 0.7], distill=ON).stages()) == {"target": 2}, "D|T|40|70: T's output"
    assert teacher_points(tiny_plan("PB", s1=0.5, distill=ON).stages()) == {"source": 1}, "D|50|T: the transfer is not taught"
    assert teacher_points(tiny_plan("PBA", s1=0.4, s2=0.7, distill=ON).stages()) == {"source": 1, "target": 3}
    assert teacher_points(tiny_plan("PA", s2=0.5, method="epruning", distill=ON).stages()) == {"target": 2}
    assert teacher_points(tiny_plan("PA", s2=0.5).stages()) == {}, "no distillation, no teacher"
    # labeled retraining after an undistilled pruning stage learns from the transferred model, not the pruned one
    assert teacher_points(tiny_plan("PA", s2=0.5, quantize="QR", retrain=labeled).stages()) == {"target": 2}
    assert teacher_points(tiny_plan("PB", s1=0.5, quantize="QR", retrain=labeled).stages()) == {"target": 3}
    unlabeled = RetrainConfig(mode="unlabeled", distill=ON)  # the paper's retraining has its own teacher
    assert teacher_points(tiny_plan("PA", s2=0.5, quantize="QR", retrain=unlabeled).stages()) == {}


def test_a_plan_dumps_distill_only_when_on_and_carries_it_through_json() -> None:
    off, on = tiny_plan("PA", s2=0.5), tiny_plan("PA", s2=0.5, distill=ON)
    assert "distill" not in off.steps[2].model_dump(mode="json")["config"], "plans of old keep their keys"
    assert on.steps[2].model_dump(mode="json")["config"]["distill"] == ON
    again = Plan.model_validate(json.loads(json.dumps(on.model_dump(mode="json"))))
    assert isinstance(again.steps[2], PruneStep) and again.steps[2].config.distill == DistillConfig(**ON)
    epruned = tiny_plan("PA", s2=0.5, method="epruning", distill=ON).steps[2]
    assert isinstance(epruned, EPruneStep) and epruned.schedule.distill.weight == 1.0, "copied into EPruning's schedule"
    assert "distill" not in tiny_plan("PA", s2=0.5, method="epruning").steps[2].model_dump(mode="json")["schedule"]
    shared = tiny_plan("PA", s2=0.5, quantize="QR", retrain=RetrainConfig(mode="labeled")).steps[3]
    assert isinstance(shared, ShareStep) and "distill" not in shared.model_dump(mode="json")["retrain"]


def test_the_cache_key_holds_the_teacher_only_when_distilling() -> None:
    config = {"final": 0.5}
    assert stage_key(config, "in", {}, 0) == stage_key(config, "in", {}, 0, teacher=None)
    keys = {stage_key(config, "in", {}, 0), stage_key(config, "in", {}, 0, teacher="a"),
            stage_key(config, "in", {}, 0, teacher="b")}
    assert len(keys) == 3


# The plan the pipeline tests share: D|T|40|70|B, both pruning stages distilled from T's output.
# Its uninterrupted run with the cache writes a checkpoint after every stage, both kinds.


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("distilled")
    plan = tiny_plan("PA", s2=[0.4, 0.7], distill=ON)
    cache = StageCache(root / "cache")
    ctx = Context(SOURCE, TARGET, root / "run")
    keys: dict[int, str | None] = {}
    teachers: dict[int, dict] = {}

    def after(model: nn.Module, progress) -> None:
        keys[progress.index] = progress.cache_key
        teachers[progress.index] = copy.deepcopy(progress.teachers)
        for cached in (True, False):
            folder = root / f"checkpoint-{progress.index}-{'cached' if cached else 'plain'}"
            folder.mkdir()
            _write_checkpoint(folder, model, progress, ctx, cached=cached)

    model, metrics = run_plan(plan, ctx, cache=cache, after_stage=after)
    return {"plan": plan, "root": root, "cache": cache, "keys": keys, "teachers": teachers, "ctx": ctx,
            "state": copy.deepcopy(model.state_dict()), "metrics": metrics}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_plan_takes_the_teacher_at_the_first_compressing_stage_and_keys_the_cache_on_it(distilled) -> None:
    plan, keys, teachers, cache = distilled["plan"], distilled["keys"], distilled["teachers"], distilled["cache"]
    assert 2 not in teachers or teachers[2] == {}, "after T: no teacher yet"
    ref = teachers[3]["target"]
    assert ref["cache_key"] == keys[2], "the target's teacher is T's output (its cache entry)"
    transferred = cache.get(keys[2])
    assert ref["hash"] == transferred[2] == state_hash(distilled["ctx"].teachers["target"].state_dict())
    assert teachers[4]["target"] == ref, "the second milestone learns from the same teacher, not from 40's output"
    for index, step_index in ((3, 2), (4, 3)):  # the two distilling stages' keys hold T's hash
        step = plan.steps[step_index]
        assert keys[index] == stage_key(step.model_dump(mode="json"), distilled_input(distilled, step_index),
                                        plan.data_key(), plan.seed, teacher=ref["hash"])
    dense_key = stage_key(plan.steps[0].model_dump(mode="json"), None, plan.data_key(), plan.seed)
    assert keys[1] == dense_key, "a stage that does not distill keys as before"


def distilled_input(distilled: dict, step_index: int) -> str:
    """The content hash of the model entering step ``step_index`` (the entry before it)."""
    return distilled["cache"].get(distilled["keys"][step_index])[2]


def test_run_stages_passes_the_same_teacher_a_stage_would_see_and_another_teacher_changes_the_result(distilled) -> None:
    plan, root = distilled["plan"], distilled["root"]
    transferred = rebuild("small_resnet", distilled["cache"].get(distilled["keys"][2])[0])
    stages = plan.stages()[2:4]  # 40 and 70, both distilled (weight 1)
    via_runner, _ = run_stages(stages, Context(SOURCE, TARGET, root / "stages"), model=copy.deepcopy(transferred))

    def by_hand(teacher: nn.Module) -> dict[str, torch.Tensor]:
        ctx = Context(SOURCE, TARGET, root / "by-hand", teachers={"target": frozen_copy(teacher)})
        model = copy.deepcopy(transferred)
        for stage in stages:
            model, _ = stage.run(model, ctx)
        return model.state_dict()

    assert same_state(via_runner.state_dict(), by_hand(transferred)), "the runner's teacher: the model entering 40"
    assert same_state(via_runner.state_dict(), distilled["cache"].get(distilled["keys"][4])[0]), "run_stages and run_plan agree"
    torch.manual_seed(5)
    assert not same_state(via_runner.state_dict(), by_hand(build_model("small_resnet", 5))), "another teacher, another model"


def test_a_gradual_stage_run_by_itself_learns_from_its_own_input(distilled) -> None:
    """Outside the runner (no teacher captured) a distilling gradual stage's teacher is the model it
    receives, as the runner would give a trial's first compressing stage."""
    stage = GradualPrune(GradualConfig(final=0.4, distill=ON), domain="target")
    torch.manual_seed(3)
    model = build_model("small_resnet", 5)
    alone, _ = stage.run(copy.deepcopy(model), Context(SOURCE, TARGET, distilled["root"] / "alone"))
    given = Context(SOURCE, TARGET, distilled["root"] / "given", teachers={"target": frozen_copy(model)})
    taught, _ = stage.run(copy.deepcopy(model), given)
    assert same_state(alone.state_dict(), taught.state_dict())


def test_labeled_retraining_after_sharing_learns_from_the_trials_teacher(distilled) -> None:
    pruned = rebuild("small_resnet", distilled["state"])
    transferred = rebuild("small_resnet", distilled["cache"].get(distilled["keys"][2])[0])
    share = ShareConfig(groups={"layer1": 4})

    def retrained(weight: float, teacher: nn.Module | None) -> dict[str, torch.Tensor]:
        retrain = RetrainConfig(mode="labeled", epochs=1, distill={"weight": weight, "temperature": 4.0})
        ctx = Context(SOURCE, TARGET, distilled["root"] / "share", teachers={"target": frozen_copy(teacher)} if teacher else {})
        model, _ = Share(share, retrain).run(copy.deepcopy(pruned), ctx)
        return model.state_dict()

    plain, taught = retrained(0.0, None), retrained(0.5, transferred)
    assert same_state(taught, retrained(0.5, transferred))
    assert not same_state(plain, taught)
    with pytest.raises(FrontierError, match="no teacher of the target"):
        retrained(0.5, None)


# --- resume and rerun -----------------------------------------------------------------------------


def checkpoint(folder: Path):
    from ray import tune

    return tune.Checkpoint.from_directory(str(folder))


def test_a_trial_resumed_from_cache_entries_distills_from_the_same_teacher(distilled, tmp_path: Path) -> None:
    """Resumed after 40 (index 3), with 70's entry gone: 70 is computed again from the teacher that
    the checkpoint names (T's entry), and ends as the uninterrupted run did."""
    plan = distilled["plan"]
    root = tmp_path / "cache"
    shutil.copytree(distilled["cache"].root, root)
    cache = StageCache(root)
    shutil.rmtree(root / distilled["keys"][4])  # 70's output: recomputed by the resumed run
    folder = distilled["root"] / "checkpoint-3-cached"
    assert not (folder / "model.pt").exists() and not list(folder.glob("teacher.*")), "the checkpoint refers to the cache"
    ctx = Context(SOURCE, TARGET, tmp_path / "resumed")
    model, progress = _restore(checkpoint(folder), plan, cache, ctx)
    assert progress.index == 3 and set(ctx.teachers) == {"target"}
    assert not ctx.teachers["target"].training and not any(p.requires_grad for p in ctx.teachers["target"].parameters())
    resumed, metrics = run_plan(plan, ctx, cache=cache, model=model, progress=progress)
    assert "P2.2" not in metrics["cached_stages"].split(","), "70 ran again"
    assert same_state(resumed.state_dict(), distilled["state"])
    assert metrics["accuracy"] == distilled["metrics"]["accuracy"]


def test_a_trial_resumed_without_the_cache_reads_its_teacher_from_the_checkpoint(distilled, tmp_path: Path) -> None:
    plan, folder = distilled["plan"], distilled["root"] / "checkpoint-3-plain"
    assert (folder / "model.pt").is_file() and (folder / "teacher.target.pt").is_file()
    ctx = Context(SOURCE, TARGET, tmp_path / "resumed")
    model, progress = _restore(checkpoint(folder), plan, None, ctx)
    resumed, _ = run_plan(plan, ctx, model=model, progress=progress)
    assert same_state(resumed.state_dict(), distilled["state"])


def test_a_checkpoint_whose_teacher_entry_is_gone_starts_afresh(distilled, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    shutil.copytree(distilled["cache"].root, root)
    shutil.rmtree(root / distilled["keys"][2])  # T's output: the teacher of the target
    ctx = Context(SOURCE, TARGET, tmp_path / "resumed")
    model, progress = _restore(checkpoint(distilled["root"] / "checkpoint-3-cached"), distilled["plan"], StageCache(root), ctx)
    assert model is None and progress.index == 0 and not ctx.teachers


def test_a_rerun_of_the_plans_json_reproduces_the_distilled_trial(distilled, tmp_path: Path) -> None:
    """``frontier rerun`` runs the plan read back from ``plans.json`` without the cache
    (:func:`search.final.rerun.rerun`): the teacher is rebuilt on the way, bit for bit."""
    plan = Plan.model_validate(json.loads(json.dumps(distilled["plan"].model_dump(mode="json"))))
    model, metrics = run_plan(plan, Context(plan.source, plan.target, tmp_path, seed=plan.seed))
    assert same_state(model.state_dict(), distilled["state"])
    assert (metrics["accuracy"], metrics["size_bytes"]) == (distilled["metrics"]["accuracy"], distilled["metrics"]["size_bytes"])


# --- the spec -------------------------------------------------------------------------------------


def test_a_spec_searches_the_distill_weight_and_check_accepts_it(tmp_path: Path, capsys) -> None:
    space = {"order": "PA", "s2": 0.5, "prune.distill.weight": {"choice": [0, 0.5, 1.0]},
             "prune.distill.temperature": {"float": [1.0, 8.0]}, "retrain.distill.weight": {"choice": [0, 0.5]}}
    raw = tiny_spec("distill", trials=2, space=space)
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 0, capsys.readouterr().err
    spec = parse_spec(raw)
    plan = plan_for(spec, {"order": "PA", "s2": 0.5, "prune.distill.weight": 0.5, "prune.distill.temperature": 2.0})
    assert plan.steps[2].config.distill == DistillConfig(weight=0.5, temperature=2.0)
    raw["space"]["prune.distill.weight"] = {"choice": [0, 1.5]}
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 2
    assert "space.prune.distill.weight: 1.5 is not valid for budgets.prune.distill.weight" in capsys.readouterr().err
