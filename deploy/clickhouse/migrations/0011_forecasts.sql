-- Month-end spend forecasts (issue 17): per team, per workflow and per monthly budget,
-- as the rollup's alert engine projects them (docs/ALERTS.md, *Forecast*), written once
-- an hour of event time. A row is one projection as of a moment: the spend so far, the
-- expected month-end spend and its 90 % band (5th to 95th percentile).
CREATE TABLE IF NOT EXISTS {db}.spend_forecasts
(
    as_of DateTime64(3, 'UTC') COMMENT 'the event clock when projected',
    period_end DateTime64(3, 'UTC') COMMENT 'the end of the month projected',
    team LowCardinality(String),
    workflow LowCardinality(String) COMMENT 'empty: the whole team',
    budget String COMMENT 'a monthly budget''s id, else empty',
    subject Map(String, String),
    currency LowCardinality(String),
    spent Decimal(38, 18) COMMENT 'spend of the month up to as_of (exact)',
    expected Decimal(38, 18),
    low Decimal(38, 18),
    high Decimal(38, 18),
    method LowCardinality(String) COMMENT 'seasonal, or linear before 14 days of history',
    history_days UInt16
)
ENGINE = ReplacingMergeTree(as_of)
ORDER BY (period_end, team, workflow, budget, toStartOfHour(as_of));

-- Every projection (the latest of each hour), for the forecast panel.
CREATE OR REPLACE VIEW {db}.v_spend_forecast AS
SELECT as_of, period_end, team, workflow, budget, currency, spent, expected, low, high,
       method, history_days
FROM {db}.spend_forecasts FINAL;

-- The latest projection of each month, team, workflow and budget.
CREATE OR REPLACE VIEW {db}.v_spend_forecast_latest AS
SELECT f.period_end AS period_end, f.team AS team, f.workflow AS workflow, f.budget AS budget,
       argMax(f.currency, f.as_of) AS currency,
       max(f.as_of) AS latest,
       argMax(f.spent, f.as_of) AS spent,
       argMax(f.expected, f.as_of) AS expected,
       argMax(f.low, f.as_of) AS low,
       argMax(f.high, f.as_of) AS high,
       argMax(f.method, f.as_of) AS method,
       argMax(f.history_days, f.as_of) AS history_days
FROM {db}.spend_forecasts AS f FINAL
GROUP BY period_end, team, workflow, budget;
