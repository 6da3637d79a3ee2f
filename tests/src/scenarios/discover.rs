//! Discovery by behaviour name (checklist item 12).

use exchange_core::{ACADEMY_AGENT_BASE, AgentRegistration};
use uuid::Uuid;

use crate::TestBackend;

/// Item 12: exact match on the first behaviour; any behaviour with `allow_subclasses`; the
/// Academy base class finds every agent that lists it; result ids equal the registered ones.
pub async fn discover_matches_behaviors(backend: &impl TestBackend) {
    let ex = backend.client().await;
    // Fresh names, so a shared server with other agents does not disturb the assertions.
    let ns = Uuid::new_v4().simple().to_string();
    let base = format!("t{ns}.Calculator");
    let derived = format!("t{ns}.ScientificCalculator");
    let other = format!("t{ns}.Planner");
    let register = |names: Vec<String>| {
        let ex = ex.clone();
        async move { ex.register_agent(AgentRegistration::new(names).with_name("calc")).await.unwrap() }
    };
    let calc = register(vec![base.clone(), ACADEMY_AGENT_BASE.into()]).await;
    let sci = register(vec![derived.clone(), base.clone(), ACADEMY_AGENT_BASE.into()]).await;
    let planner = register(vec![other.clone(), ACADEMY_AGENT_BASE.into()]).await;

    assert_eq!(ex.discover(&base, false).await.unwrap(), vec![calc.clone()]);
    let mut with_subclasses = ex.discover(&base, true).await.unwrap();
    with_subclasses.sort_by_key(|id| id.uid());
    let mut expected = vec![calc.clone(), sci.clone()];
    expected.sort_by_key(|id| id.uid());
    assert_eq!(with_subclasses, expected);
    assert_eq!(ex.discover(&derived, false).await.unwrap(), vec![sci.clone()]);
    assert_eq!(ex.discover(&format!("t{ns}.Missing"), true).await.unwrap(), vec![]);

    let everyone = ex.discover(ACADEMY_AGENT_BASE, true).await.unwrap();
    for id in [&calc, &sci, &planner] {
        assert!(everyone.contains(id), "{id} missing from discover({ACADEMY_AGENT_BASE})");
    }
    assert!(
        ex.discover(ACADEMY_AGENT_BASE, false).await.unwrap().iter().all(|id| ![&calc, &sci, &planner].contains(&id))
    );
    // Users are never discovered.
    let user = ex.register_user(None).await.unwrap();
    assert!(everyone.iter().all(|id| id.uid() != user.uid()));
}

/// Item 12: terminated agents are left out.
pub async fn discover_skips_terminated_agents(backend: &impl TestBackend) {
    let ex = backend.client().await;
    let name = format!("t{}.Worker", Uuid::new_v4().simple());
    let a = ex.register_agent(AgentRegistration::new([name.clone()])).await.unwrap();
    let b = ex.register_agent(AgentRegistration::new([name.clone()])).await.unwrap();
    ex.terminate(&a.clone().into()).await.unwrap();
    assert_eq!(ex.discover(&name, false).await.unwrap(), vec![b]);
}
