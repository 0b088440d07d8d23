"""SageMaker script-mode entry point: train an image classifier on the job's channels.

    python train.py --epochs 30 --batch-size 128 --lr 0.002 ...

What a SageMaker training script does, in order (``run``):

1. parse the hyperparameters (``hyperparameters.parse_args``: ``--key value``, paths from ``SM_*``);
2. read the channels (``data.load_data``: class folders of images, decoded once into memory when they fit);
3. build the model (``model_def.create_model``) and train it (``engine.Trainer``: best-on-validation weights,
   checkpoints for spot resume, early stopping);
4. evaluate the kept weights on val and test and save the model to ``SM_MODEL_DIR`` (model.tar.gz) and the
   metrics to ``SM_OUTPUT_DATA_DIR`` (output.tar.gz).

Run by the SageMaker training toolkit (SDK v2), by ModelTrainer's drivers (SDK v3), by ``torchrun`` for several
GPUs or hosts, or by hand. Every failure leaves one line in ``<SM_OUTPUT_DIR>/failure`` saying what is wrong and
what to do, and a non-zero exit (2: bad input, 143: stopped by SIGTERM, 1: anything unexpected).

Outputs: ``<model-dir>/model.pth`` (state_dict), ``model_config.json``, ``label_dict.json`` and ``code/``
(inference.py and the modules it imports, so model.tar.gz deploys as is); ``<output-data-dir>/metrics.json``;
checkpoints in ``<checkpoint-dir>`` when there is one.
"""
import dataclasses
import logging
import os
import shutil
import sys
import time
import types

import numpy as np
import torch

import accounting
import data as data_lib
import distributed
import ensemble
import epoch_log
import evaluation
import hosts
import initialisation
import layout
import model_config
import model_def
import safeguards
import schedule
import utils
from engine import ProgressBar, Trainer
from errors import ConfigError, Stopped, TrainingError, write_failure
from hyperparameters import flip_tta, memory_format, parse_args, recorded
# estimator.deploy() serves the training entry point (SAGEMAKER_PROGRAM=train.py): the endpoint's handlers, here too
from inference import input_fn, model_fn, output_fn, predict_fn  # noqa: F401

logger = logging.getLogger("train")

HERE = os.path.dirname(os.path.abspath(__file__))
# what the endpoint imports (tests/test_architecture.py checks this is inference.py's closure in code/)
INFERENCE_FILES = ("inference.py", "model_def.py", "model_config.py", "prediction.py", "images.py", "errors.py",
                   "utils.py")
SIGTERM_EXIT_CODE = 143


# ==================================================================================================
# Set-up
# ==================================================================================================
def setup_logging(rank=0):
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout, force=True)


def select_device(args, dist_info):
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda was asked for but no GPU is visible; use device=auto or a GPU instance")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda", dist_info.local_rank)
    return torch.device("cpu")


def autocast_dtype(args, device):
    """bf16 where the hardware does it well, fp16 on older GPUs, None (fp32) when amp is off."""
    if not args.amp:
        return None
    if device.type == "cuda":  # native bf16 from Ampere (sm80) on; is_bf16_supported() also says yes to emulation
        return torch.bfloat16 if torch.cuda.get_device_properties(device).major >= 8 else torch.float16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def check_writable(folder, what):
    try:
        os.makedirs(folder, exist_ok=True)
        utils.atomic_write_text(os.path.join(folder, ".write-test"), "ok")
        os.unlink(os.path.join(folder, ".write-test"))
    except OSError as exc:
        raise ConfigError(f"the {what} {folder} is not writable ({exc.strerror}); "
                          f"give a writable --{what.replace(' ', '-')} or fix its permissions") from exc


def build_model(args, data, num_classes, device, dist_info):
    """(the model on its device, what the training step calls: the model, DDP around it, or compiled, and where its
    weights started: initialisation.build's record)."""
    model, initialised_from = initialisation.build(args, data, num_classes)
    try:
        model_def.check_input_size(model, args.model, data.channels, data.size)
    except ValueError as exc:
        raise ConfigError(f"invalid hyperparameter: {exc}") from exc
    model = model.to(device, memory_format=memory_format(args))
    wrapped = model
    if dist_info.enabled:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        wrapped = torch.compile(wrapped)
    return model, wrapped, initialised_from


# ==================================================================================================
# The model directory (model.tar.gz)
# ==================================================================================================
class ModelWriter:
    """Writes model.pth, model_config.json, label_dict.json and code/ (the endpoint's modules), each atomically."""

    def __init__(self, model_dir, config):
        self.model_dir, self.config = model_dir, config

    def exists(self):
        return os.path.exists(os.path.join(self.model_dir, "model.pth"))

    def save(self, weights):
        utils.atomic_torch_save(weights, os.path.join(self.model_dir, "model.pth"))
        model_config.write(self.model_dir, self.config)
        utils.atomic_write_json(os.path.join(self.model_dir, layout.LABEL_DICT_FILE),
                                layout.label_dict_json(self.config["classes"]))
        if os.path.isfile(os.path.join(HERE, "inference.py")):
            code_dir = os.path.join(self.model_dir, "code")
            os.makedirs(code_dir, exist_ok=True)
            for name in INFERENCE_FILES:
                shutil.copyfile(os.path.join(HERE, name), os.path.join(code_dir, name))


def evaluate_and_save(fitted, model, data, predict, args, writer, dist_info, ensemble_rule=None):
    """The kept weights (``fitted``: Trainer.fit's FitResult) in ``model``, predicted by ``predict`` (an
    evaluation.SplitPredictor): calibrate and choose the operating point on val, report val and test, and write the
    model (with those decisions in its model_config.json) and metrics.json (rank 0)."""
    model.load_state_dict(fitted.best_weights)
    task, classes = data.task, list(data.classes)
    predicted = {name: predict(model, split, name) for name, split in (("val", data.val), ("test", data.test))
                 if split is not None}
    for name, (_, logits, _) in predicted.items():
        if not np.isfinite(logits).all():  # the model dir holds the kept model (Trainer.fit)
            raise safeguards.non_finite_error(f"the model's predictions on {name} are NaN or infinite",
                                              epoch=fitted.state.epoch, args=args, lr=fitted.plan.lr,
                                              best_epoch=fitted.best_epoch)
    positive = getattr(data.classes, "positive", None)
    decisions = evaluation.fit_decisions(*predicted["val"][:2], task=task, classes=classes, calibrate=args.calibrate,
                                         target_sensitivity=args.target_sensitivity, positive=positive)
    writer.config = model_config.with_decisions(writer.config, decisions)
    metrics = {"history": fitted.state.history, "best_epoch": fitted.best_epoch, "classes": classes,
               "classes_from": data.classes.source, "task": task, "config": writer.config,
               "positive_class": None if positive is None else classes[positive],
               "positive_class_from": getattr(data.classes, "positive_from", None),
               "plan": fitted.plan.to_dict(), "steps": fitted.state.global_step, "epochs_run": fitted.state.epoch,
               "initialised_from": writer.config.get("initialised_from"),
               "train_images_by_host": data.train_images_by_host,
               "decisions": dataclasses.asdict(decisions)}
    if ensemble_rule:  # why one model (ensemble.decide's line)
        metrics["ensemble"] = {"members": 1, "rule": ensemble_rule}
    for name, (labels, logits, idx) in predicted.items():
        split = data.val if name == "val" else data.test
        metrics[name], metrics[f"{name}_predictions"] = evaluation.report(
            labels, logits, [split.names[i] for i in idx], decisions, task=task, classes=classes,
            ordinal=args.ordinal, resamples=args.bootstrap if name == "test" else 0, seed=args.seed,
            groups=[split.groups[i] for i in idx] if split.groups is not None else None)
        why = accounting.undefined(labels, classes, task, name, positive=1 if positive is None else positive)
        if why:  # the nulls of this split, each with its reason
            metrics[name]["undefined"] = why
    skipped = accounting.skipped_images(data, dist_info)  # a collective for streamed splits: every rank
    if dist_info.is_main:
        metrics["skipped"] = accounting.skipped_section(skipped, args.output_data_dir)
        writer.save(fitted.best_weights)
        path = os.path.join(args.output_data_dir, "metrics.json")
        utils.atomic_write_json(path, utils.json_safe(metrics))
    log_results(metrics, args, path if dist_info.is_main else None)


def log_results(metrics, args, path, summary=None):
    """The test line and the summary line (epoch_log's formats: the metric definitions read them); ``summary``:
    (what the kept epoch is, its figures) instead of the history's best epoch (a K-fold ensemble's)."""
    test = metrics.get("test")
    if test is not None:
        logger.info(epoch_log.test_line(epoch_log.keyed("test", test)))
        if accounting.interval_unit(test):
            logger.info("test 95%% intervals: %d bootstrap resamples of %s", args.bootstrap,
                        accounting.interval_unit(test))
    decisions = metrics["decisions"]
    if decisions["threshold"] is not None:
        op = (test or metrics["val"])["operating_point"]
        logger.info("operating point (%s): p(%s) >= %.4f; %s sensitivity %.4f specificity %.4f", decisions["rule"],
                    op["positive_class"], op["threshold"], "test" if test else "val", op["sensitivity"],
                    op["specificity"])
    # the kept epoch's own line, as the model was selected on it (epoch_log's contract; for more than two classes
    # metrics.json's val AUC, of the temperature-scaled probabilities, may differ from it in the third decimal)
    best, kept = summary or (metrics["best_epoch"], next(h for h in metrics["history"]
                                                        if h["epoch"] == metrics["best_epoch"]))
    logger.info(epoch_log.summary_line(best, kept, args.model_dir, path))


# ==================================================================================================
# Main
# ==================================================================================================
def run(args, callbacks=()):
    stop = safeguards.StopRequest()  # first: a SIGTERM while the data loads still ends in a clean stop
    dist_info = distributed.init_distributed(args.dist_timeout)
    setup_logging(dist_info.rank)
    if ProgressBar.wanted(sys.stderr, dist_info.is_main):  # a person at a terminal; never in a job's log
        callbacks = [*callbacks, ProgressBar(sys.stderr)]
    device = select_device(args, dist_info)
    amp_dtype = autocast_dtype(args, device)
    if dist_info.is_main:
        check_writable(args.model_dir, "model dir")
        check_writable(args.output_data_dir, "output data dir")
        if args.checkpoint_dir:
            check_writable(args.checkpoint_dir, "checkpoint dir")
    logger.info("device=%s amp=%s world_size=%d torch=%s", device, amp_dtype, dist_info.world_size, torch.__version__)

    started = time.perf_counter()
    hosts.check_hardware(args, dist_info)
    data = data_lib.load_data(args, device, dist_info)
    classes = data.classes
    for callback in callbacks:
        callback.on_data_loaded(data, time.perf_counter() - started)

    def make_config(initialised_from):
        return model_config.build(architecture=args.model, classes=classes, in_channels=data.channels,
                                  architecture_options=model_def.architecture_options(args.model, data.size),
                                  image_size=data.size, mean=data.mean, std=data.std, tta=flip_tta(args),
                                  hyperparameters=recorded(args), torch_version=torch.__version__.split("+")[0],
                                  task=data.task, page=args.page, positive=(classes.positive, classes.positive_from),
                                  initialised_from=initialised_from)

    amp_dtype = model_def.cpu_safe_autocast(amp_dtype, device, args.model, data.channels, data.size)
    decision = ensemble.decide(args, data, dist_info, device)  # one model, or K members (ensemble_plan's rule)
    if decision.members > 1:
        kit = types.SimpleNamespace(build=lambda a, d: build_model(a, d, len(classes), device, dist_info),
                                    make_config=make_config, writer=lambda c: ModelWriter(args.model_dir, c),
                                    log_results=log_results, device=device, amp_dtype=amp_dtype, stop=stop,
                                    dist_info=dist_info, callbacks=callbacks)
        members, pool, decision = ensemble.fit(args, data, decision, kit)
        if members:
            return ensemble.evaluate_and_save(members, pool, decision, data, args, kit)
    model, wrapped, initialised_from = build_model(args, data, len(classes), device, dist_info)
    plan = schedule.make_plan(args, data.per_rank, dist_info.world_size)  # a host's part: the largest (hosts.py)
    writer = ModelWriter(args.model_dir, make_config(initialised_from))
    predict = evaluation.SplitPredictor(args, data, plan, device, dist_info)
    trainer = Trainer(args, data, model, wrapped, plan=plan, predict=predict, device=device, amp_dtype=amp_dtype,
                      dist_info=dist_info, writer=writer, stop=stop, callbacks=callbacks)
    trainer.resume(args.checkpoint_dir)
    fitted = trainer.fit()
    evaluate_and_save(fitted, model, data, predict, args, writer, dist_info, ensemble_rule=decision.why)


def main(argv=None, callbacks=()):
    """Parse, run, and turn any failure into one line in the failure file. Returns the exit code."""
    setup_logging()
    output_dir = os.environ.get("SM_OUTPUT_DIR") or "output"
    try:
        args = parse_args(argv)
        output_dir = args.output_dir
        run(args, callbacks)
        distributed.finish()
        return 0
    except Stopped as exc:
        write_failure(output_dir, str(exc))
        return SIGTERM_EXIT_CODE
    except TrainingError as exc:
        logger.error("%s", exc)  # the user's error: one line, no traceback (it is at DEBUG for this code's authors)
        logger.debug("raised at", exc_info=True)
        write_failure(output_dir, str(exc))
        return 2
    except Exception as exc:  # noqa: BLE001 - anything unexpected still leaves one clear line
        logger.exception("unexpected error")
        lost_peer = distributed.collective_failure(exc)
        if lost_peer:  # the rank that died first may have written the real cause: keep it
            if not os.path.exists(os.path.join(output_dir, "failure")):
                write_failure(output_dir, lost_peer)
        else:
            write_failure(output_dir, f"unexpected error {type(exc).__name__}: {exc}; the training log has the "
                                      "traceback")
        return 1
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
