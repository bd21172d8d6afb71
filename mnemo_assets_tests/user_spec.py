"""A user's metadata spec in code, named in configuration as ``mnemo_assets_tests.user_spec:spec``."""

from datetime import timedelta

import polars as pl

from mnemo_assets.metadata import MetadataSpec


def spec(returns_interval, interval) -> MetadataSpec:
    return MetadataSpec(
        index={timedelta(hours=12): [pl.col("high").max().alias("high_12h"), pl.col("volume_quote").sum().alias("liq_12h")]},
        returns={timedelta(days=2): [pl.col("return").abs().max().alias("max_abs_ret_2d"), pl.col("return").count().alias("n_2d")]},
        quantiles=pl.col("liq_12h"),
        interval=interval,
        returns_interval=returns_interval,
    )
