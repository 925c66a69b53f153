"""Monthly settlement of the park (issue 5): store → ``market`` → hash-chained statements.

* :mod:`vpp.settlement.config` – programme configuration (TOML/JSON, shipped default);
* :mod:`vpp.settlement.meters` – cumulative registers → 15-minute net load, missing reported;
* :mod:`vpp.settlement.events` – completed dispatch instructions → demand-response events;
* :mod:`vpp.settlement.service` – :class:`SettlementService`: compute, record, read;
* :mod:`vpp.settlement.export` – statements as CSV / JSON.
"""

from vpp.settlement.config import (
    DEFAULT_CONFIG_TOML,
    ParkCost,
    SettlementConfig,
    SettlementConfigError,
    cny_amount_to_fen,
    config_from_dict,
    load_config,
    park_cost_from_dict,
)
from vpp.settlement.export import statement_csv, statement_rows
from vpp.settlement.service import (
    COSTS_LEDGER,
    PRICES_LEDGER,
    SETTLEMENT_LEDGER,
    MonthSettlement,
    RunResult,
    SettlementService,
    enterprise_capacity_kw,
    month_bounds,
    parse_month,
)

__all__ = [
    "COSTS_LEDGER",
    "DEFAULT_CONFIG_TOML",
    "PRICES_LEDGER",
    "SETTLEMENT_LEDGER",
    "MonthSettlement",
    "ParkCost",
    "RunResult",
    "SettlementConfig",
    "SettlementConfigError",
    "SettlementService",
    "cny_amount_to_fen",
    "config_from_dict",
    "enterprise_capacity_kw",
    "load_config",
    "month_bounds",
    "park_cost_from_dict",
    "parse_month",
    "statement_csv",
    "statement_rows",
]
