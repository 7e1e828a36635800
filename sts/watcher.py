"""Polls model folders and the model config file, and asks the repository to catch up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import anyio.to_thread

from sts.errors import StsError
from sts.model_config import ModelConfig
from sts.repository import ModelRepository

logger = logging.getLogger("sts.watcher")


class Watcher:
    """First load, then one poll every `poll_seconds` (never, when 0)."""

    def __init__(
        self,
        repository: ModelRepository,
        poll_seconds: float,
        config_file: Path | None = None,
        load_configs: Callable[[], list[ModelConfig]] | None = None,
    ) -> None:
        """`load_configs` re-reads `config_file` into model configs when it changes."""
        self.repository = repository
        self.poll_seconds = poll_seconds
        self.config_file = config_file
        self.load_configs = load_configs
        self._config_text: bytes | None = self._read_config()

    def _read_config(self) -> bytes | None:
        if self.config_file is None:
            return None
        try:
            return self.config_file.read_bytes()
        except OSError:
            return None

    async def run(self) -> None:
        """Load every model, then poll until cancelled."""
        await anyio.to_thread.run_sync(self.repository.load_all)
        if self.poll_seconds <= 0:
            return
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await anyio.to_thread.run_sync(self.poll_once)
            except Exception:
                logger.exception("poll failed; trying again in %.1fs", self.poll_seconds)

    def poll_once(self) -> None:
        """Re-read the config file if it changed, then look at every model folder."""
        self._check_config_file()
        self.repository.poll()

    def _check_config_file(self) -> None:
        if self.config_file is None or self.load_configs is None:
            return
        text = self._read_config()
        if text is None or text == self._config_text:
            return
        self._config_text = text
        try:
            configs = self.load_configs()
            # Checks each entry's backend options before anything changes.
            self.repository.update_configs(configs)
        except StsError as exc:
            logger.error(
                "model config file changed but is not usable; keeping the running models: %s", exc
            )
            return
        logger.info("model config file changed; applied it")
