"""Market side: tariffs, price signals, customer baselines, delivery performance, settlement, bids.

Pure computation over numpy arrays: no I/O, no asyncio. Units are in every
name: tariff and payment prices in CNY/kWh (as Chinese TOU tariffs are
published), spot and bid prices in CNY/MWh, money in fen where exactness
matters (allocation to the cent).
"""

from market.baselines import (
    BaselineMethod,
    BaselineResult,
    BeijingHighest,
    DayCalendar,
    EventWindow,
    JiangsuAverage,
    JiangsuRealTime,
    PjmHighFourOfFive,
    PjmSameDay,
    TenInTen,
    customer_baselines,
    to_day_grid,
)
from market.bids import BidCurve, Clearing, build_bid_curves, clear_uniform_price, envelope_bids, stack_bids
from market.performance import enterprise_delivered_kwh, response_ratio
from market.settlement import (
    DrEvent,
    EventSettlement,
    PayBand,
    PaymentRule,
    Programme,
    StatementRow,
    allocate_fen,
    capacity_payment_fen,
    cny_to_fen,
    delivered_kwh,
    event_payment_cny,
    fen_to_cny_str,
    month_statement,
    settle_event,
    settle_events,
)
from market.tariff import (
    PriceCsvError,
    PriceSeries,
    TariffConfigError,
    TouTariff,
    default_tariff,
    default_tariff_config,
    load_price_csv_rows,
    local_time,
    tariff_from_dict,
    tou_period,
    tou_price,
)

__all__ = [
    "BaselineMethod", "BaselineResult", "BeijingHighest", "BidCurve", "Clearing", "DayCalendar", "DrEvent",
    "EventSettlement", "EventWindow", "JiangsuAverage", "JiangsuRealTime", "PayBand", "PaymentRule", "PjmHighFourOfFive",
    "PjmSameDay", "PriceCsvError", "PriceSeries", "Programme", "StatementRow", "TariffConfigError", "TenInTen",
    "TouTariff", "allocate_fen", "build_bid_curves", "capacity_payment_fen", "clear_uniform_price", "cny_to_fen",
    "customer_baselines", "default_tariff", "default_tariff_config", "delivered_kwh", "enterprise_delivered_kwh",
    "envelope_bids", "event_payment_cny", "fen_to_cny_str", "load_price_csv_rows", "local_time", "month_statement",
    "response_ratio", "settle_event", "settle_events", "stack_bids", "tariff_from_dict", "to_day_grid", "tou_period",
    "tou_price",
]
