//! Tests of the figures and the activity.

use super::*;

#[test]
fn quantiles_come_from_bucket_bounds() {
    let histogram = Histogram::default();
    assert_eq!(histogram.quantile_ms(0.5), None);
    for ms in [0.5, 3.0, 3.0, 40.0, 40.0, 40.0, 40.0, 40.0, 40.0, 900.0] {
        histogram.observe(Duration::from_secs_f64(ms / 1000.0));
    }
    assert_eq!(histogram.quantile_ms(0.1), Some(1));
    assert_eq!(histogram.quantile_ms(0.3), Some(5));
    assert_eq!(histogram.quantile_ms(0.5), Some(50));
    assert_eq!(histogram.quantile_ms(0.99), Some(1000));
    let (buckets, count) = histogram.cumulative();
    assert_eq!(count, 10);
    assert_eq!(buckets.last(), Some(&(30_000, 10)));
}

#[test]
fn activity_keeps_the_most_served_assets() {
    let activity = Activity::default();
    activity.served("a", 10);
    activity.served("b", 30);
    activity.served("a", 25);
    assert_eq!(activity.top_assets(1), vec![("a".to_owned(), 35)]);
    activity.tick(5);
    activity.tick(12);
    assert_eq!(activity.per_second(), vec![5, 7]);
}
