use bft_upgrade::sim::{SimConfig, World};
use bft_upgrade::wire::Outcome;

#[test]
fn one_upgrade_commits() {
    let r = World::new(SimConfig::simple(1, 4, 4)).run();
    println!("{r:?}");
    assert!(r.violation.is_none());
    assert!(r.liveness.is_none());
    assert_eq!(r.outcomes, vec![Some(Outcome::Committed)]);
}
