# Generated from notebooks/09_many_models_one_server.ipynb by `make export`: do not edit.
# Edit the cells marked `#| export priorities` there, then run `make export`.


# ---- cell 27
import threading
import time

import numpy as np
import tritonclient.http as httpclient


def one_request(client: httpclient.InferenceServerClient, priority: int = 0) -> None:
    """One request to timed_work at ``priority`` (0: the model's default level)."""
    x = httpclient.InferInput("X", [1, 1], "FP32")
    x.set_data_from_numpy(np.zeros((1, 1), np.float32))
    client.infer("timed_work", [x], priority=priority)


def flood(url: str, stop: threading.Event) -> None:
    """Priority-2 requests, each sent as soon as the last is answered, until ``stop`` is set."""
    with httpclient.InferenceServerClient(url) as own:
        while not stop.is_set():
            one_request(own, priority=2)


def urgent_latencies(url: str, flood_clients: int, requests: int) -> list[float]:
    """Milliseconds each of ``requests`` priority-1 requests took beside a flood of priority-2 ones."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=flood, args=(url, stop), daemon=True) for _ in range(flood_clients)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # let the queue fill
    latencies = []
    try:
        with httpclient.InferenceServerClient(url) as client:
            for _ in range(requests):
                start = time.perf_counter()
                one_request(client, priority=1)
                latencies.append((time.perf_counter() - start) * 1000)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    return latencies
