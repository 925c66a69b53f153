"""Hand-computed attribution cases, one per source, and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from vpp.carbon import Attribution, BatteryFlows, SharedSplit, attribute


def _close(actual: np.ndarray, expected: object) -> None:
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=float), rtol=0, atol=1e-12)


def _balanced(result: Attribution) -> None:
    _close(result.green_kwh + result.grid_kwh, result.consumption_kwh)


def test_own_pv_serves_its_owner_first_and_its_surplus_is_exported() -> None:
    result = attribute([[10.0, 4.0]], own_pv_kwh=[[6.0, 10.0]])
    _close(result.own_pv_kwh, [[6.0, 4.0]])
    _close(result.grid_kwh, [[4.0, 0.0]])
    _close(result.own_pv_exported_kwh, [[0.0, 6.0]])
    _close(result.exported_green_kwh, [0.0, 6.0])
    _balanced(result)


def test_shared_supply_pro_rata_to_remaining_consumption() -> None:
    # Enterprise 0 needs 30 after nothing else, enterprise 1 needs 10: 20 kWh split 15/5.
    result = attribute([[30.0, 30.0], [10.0, 10.0]], shared_green_kwh=[[20.0, 50.0]])
    _close(result.shared_green_kwh, [[15.0, 30.0], [5.0, 10.0]])
    _close(result.grid_kwh, [[15.0, 0.0], [5.0, 0.0]])
    _close(result.shared_used_kwh, [[20.0, 40.0]])
    _close(result.shared_exported_kwh, [[0.0, 10.0]])
    _balanced(result)


def test_shared_supply_pro_rata_counts_what_own_pv_already_served() -> None:
    # Enterprise 0 needs 30 - 20 = 10 after its PV, enterprise 1 needs 30: 8 kWh split 2/6.
    result = attribute([[30.0], [30.0]], own_pv_kwh=[[20.0], [0.0]], shared_green_kwh=[[8.0]])
    _close(result.shared_green_kwh, [[2.0], [6.0]])


def test_shared_supply_by_contract_priority_then_leftover_pro_rata() -> None:
    # Priority 2, 0, 1; contracts: e2 8 kWh, e0 20 kWh, e1 none. 25 kWh:
    # e2 takes 8, e0 takes 10 (all it needs), 7 left for needs (0, 10, 2) pro rata.
    split = SharedSplit("priority", priority=[[1, 2, 0]], contract_kwh=[[20.0, 0.0, 8.0]])
    result = attribute([[10.0], [10.0], [10.0]], shared_green_kwh=[[25.0]], split=split)
    _close(result.shared_green_kwh, [[10.0], [10.0 * 7 / 12], [8.0 + 2.0 * 7 / 12]])
    _close(result.shared_exported_kwh, [[0.0]])
    assert result.split_rule == "priority"
    _balanced(result)


def test_priority_per_interval_contracts_and_supplies_in_row_order() -> None:
    # Supply 0 prefers e1 (cap 3 in t0, 0 in t1), supply 1 prefers e0 (unlimited).
    split = SharedSplit(
        "priority",
        priority=[[1, 0], [0, 1]],
        contract_kwh=np.array([[[0.0, 0.0], [3.0, 0.0]], [[9.0, 9.0], [9.0, 9.0]]]),
    )
    result = attribute([[4.0, 4.0], [4.0, 4.0]], shared_green_kwh=[[3.0, 3.0], [2.0, 2.0]], split=split)
    # t0: s0 -> e1 3; s1 -> e0 2 (first), e1 gets the 0 left. Nothing left over.
    # t1: s0 contracts nobody; s1 -> e0 2; leftover 3 of s0 pro rata to needs (2, 4): 1 and 2.
    _close(result.shared_green_kwh, [[2.0, 3.0], [3.0, 2.0]])
    _close(result.shared_used_kwh, [[3.0, 3.0], [2.0, 2.0]])


def _battery_case(**factors: float) -> Attribution:
    # t0: PV 10, load 2: 8 kWh surplus charges the battery (7.2 kWh green stored at 90 %).
    # t1: load 5 from the grid, and 4 kWh of grid charge (3.6 kWh grid stored).
    # t2: load 10, discharge 9 kWh = 10 kWh from the cell of 10.8 (2/3 green):
    #     6 kWh green, 3 kWh grid origin delivered; 1 kWh more from the grid.
    batteries = BatteryFlows(
        charge_kwh=[[8.0, 4.0, 0.0]],
        discharge_kwh=[[0.0, 0.0, 9.0]],
        owner=np.array([0]),
        charge_efficiency=0.9,
        discharge_efficiency=0.9,
    )
    return attribute([[2.0, 5.0, 10.0]], own_pv_kwh=[[10.0, 0.0, 0.0]], batteries=batteries, **factors)


def test_battery_carries_the_green_fraction_of_what_it_stored_with_losses() -> None:
    result = _battery_case()
    _close(result.own_pv_kwh, [[2.0, 0.0, 0.0]])
    _close(result.battery_green_charge_kwh, [[8.0, 0.0, 0.0]])
    _close(result.battery_grid_charge_kwh, [[0.0, 4.0, 0.0]])
    _close(result.storage_green_kwh, [[0.0, 0.0, 6.0]])
    _close(result.storage_grid_kwh, [[0.0, 0.0, 3.0]])
    _close(result.grid_kwh, [[0.0, 5.0, 4.0]])
    _close(result.battery_green_out_kwh, [[0.0, 0.0, 6.0]])
    _close(result.final_green_kwh, [7.2 - 20.0 / 3.0])
    _close(result.final_grid_kwh, [3.6 - 10.0 / 3.0])
    _close(result.own_pv_exported_kwh, [[0.0, 0.0, 0.0]])
    _balanced(result)


def test_battery_grid_energy_is_counted_when_drawn() -> None:
    # Grid draw: t1 5 (load) + 4 (charging); t2 1; the 3 kWh of grid-origin storage are not counted twice.
    result = _battery_case(grid_factor_kg_per_kwh=0.5, residual_factor_kg_per_kwh=[0.6, 0.6, 0.7])
    _close(result.grid_draw_kwh, [[0.0, 9.0, 1.0]])
    _close(result.location_based_kg, [[0.0, 4.5, 0.5]])
    _close(result.market_based_kg, [[0.0, 5.4, 0.7]])


def test_initial_stock_and_untracked_discharge() -> None:
    # 4 kWh green + 4 kWh grid stored; discharging 10 kWh at 100 % finds only 8: 2 kWh untracked, counted as grid.
    batteries = BatteryFlows([[0.0]], [[10.0]], np.array([0]), 1.0, 1.0, initial_green_kwh=4.0, initial_grid_kwh=4.0)
    result = attribute([[10.0]], batteries=batteries)
    _close(result.storage_green_kwh, [[4.0]])
    _close(result.storage_grid_kwh, [[4.0]])
    _close(result.battery_untracked_kwh, [[2.0]])
    _close(result.grid_kwh, [[6.0]])
    _close(result.grid_draw_kwh, [[2.0]])  # only the untracked energy: the initial grid stock was drawn earlier


def test_two_batteries_of_one_owner_share_its_surplus_pro_rata_to_charge() -> None:
    batteries = BatteryFlows([[3.0], [1.0]], [[0.0], [0.0]], np.array([0, 0]), 1.0, 1.0)
    result = attribute([[0.0]], own_pv_kwh=[[2.0]], batteries=batteries)
    _close(result.battery_green_in_kwh, [[1.5], [0.5]])
    _close(result.battery_grid_charge_kwh, [[2.0]])
    _close(result.final_green_kwh, [1.5, 0.5])
    _close(result.final_grid_kwh, [1.5, 0.5])


def test_battery_discharge_beyond_the_owners_load_is_exported_with_its_green_fraction() -> None:
    batteries = BatteryFlows([[0.0]], [[6.0]], np.array([0]), 1.0, 1.0, initial_green_kwh=6.0, initial_grid_kwh=3.0)
    result = attribute([[2.0], [5.0]], batteries=batteries)
    # 6 kWh delivered, 2/3 green; owner uses 2 (4/3 green), 4 exported (8/3 green); e1 gets none of it.
    _close(result.storage_green_kwh, [[4.0 / 3.0], [0.0]])
    _close(result.storage_exported_green_kwh, [[8.0 / 3.0], [0.0]])
    _close(result.storage_exported_grid_kwh, [[4.0 / 3.0], [0.0]])
    _close(result.grid_kwh, [[2.0 / 3.0], [5.0]])


def test_contract_certificates_are_matched_per_interval_and_the_rest_is_unmatched() -> None:
    result = attribute(
        [[10.0, 2.0], [5.0, 5.0]],
        own_pv_kwh=[[4.0, 0.0], [0.0, 0.0]],
        contract_kwh=[[3.0, 5.0], [10.0, 0.0]],
    )
    _close(result.contract_kwh, [[3.0, 2.0], [5.0, 0.0]])
    _close(result.unmatched_contract_kwh, [[0.0, 3.0], [5.0, 0.0]])
    _close(result.grid_kwh, [[3.0, 0.0], [0.0, 5.0]])
    _balanced(result)


def test_contracts_come_after_shared_green() -> None:
    result = attribute([[10.0]], shared_green_kwh=[[6.0]], contract_kwh=[[6.0]])
    _close(result.shared_green_kwh, [[6.0]])
    _close(result.contract_kwh, [[4.0]])
    _close(result.unmatched_contract_kwh, [[2.0]])


def test_exported_green_is_not_also_consumed() -> None:
    # e0 has 8 kWh surplus; e1 takes 5 of it through the pool; only 3 are exported.
    result = attribute([[2.0], [5.0]], own_pv_kwh=[[10.0], [0.0]])
    _close(result.shared_green_kwh, [[0.0], [5.0]])
    _close(result.own_pv_pooled_kwh, [[5.0], [0.0]])
    _close(result.own_pv_exported_kwh, [[3.0], [0.0]])
    assert result.green_kwh.sum() + result.exported_green_kwh.sum() == pytest.approx(10.0)


def test_without_pooling_the_whole_surplus_is_exported() -> None:
    result = attribute([[2.0], [5.0]], own_pv_kwh=[[10.0], [0.0]], pool_surplus=False)
    _close(result.shared_green_kwh, [[0.0], [0.0]])
    _close(result.own_pv_exported_kwh, [[8.0], [0.0]])
    _close(result.grid_kwh, [[0.0], [5.0]])


def test_results_are_read_only_and_the_inputs_stay_writable() -> None:
    consumption = np.array([[1.0, 2.0]])
    result = attribute(consumption)
    consumption[0, 0] = 5.0
    assert result.consumption_kwh[0, 0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        result.grid_kwh[0, 0] = 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"consumption_kwh": [[1.0, -1.0]]}, r"consumption_kwh\[0, 1\] = -1.0"),
        ({"consumption_kwh": [[1.0, np.nan]]}, r"consumption_kwh\[0, 1\]"),
        ({"consumption_kwh": [1.0]}, "2-D"),
        ({"consumption_kwh": [[1.0]], "own_pv_kwh": [[1.0, 2.0]]}, r"own_pv_kwh has shape \(1, 2\), expected \(1, 1\)"),
        ({"consumption_kwh": [[1.0]], "shared_green_kwh": [[1.0, 2.0]]}, "shared_green_kwh has shape"),
        (
            {"consumption_kwh": [[1.0]], "batteries": BatteryFlows([[1.0]], [[0.0]], np.array([3]))},
            r"owner\[0\] = 3 is not an enterprise index",
        ),
        (
            {"consumption_kwh": [[1.0]], "batteries": BatteryFlows([[1.0]], [[0.0]], np.array([0]), 1.5)},
            r"charge_efficiency\[0\] = 1.5",
        ),
        ({"consumption_kwh": [[1.0]], "split": SharedSplit("lottery")}, "split.rule 'lottery'"),
        (
            {
                "consumption_kwh": [[1.0]],
                "shared_green_kwh": [[1.0]],
                "split": SharedSplit("priority", priority=[[0, 1]]),
            },
            r"split.priority must be finite ranks of shape \(1, 1\)",
        ),
        ({"consumption_kwh": [[1.0]], "grid_factor_kg_per_kwh": [0.5, 0.5]}, "grid_factor_kg_per_kwh has shape"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        attribute(**kwargs)
