//! Events: subscribers on two connections and in-process, a publisher on a third, a queue
//! group sharing work, and a slow subscriber that learns how many events it lost
//! (docs/guide.md, "Events").
//!
//! Run with `cargo run -p netron-engine --example events`.

use std::time::Duration;

use netron_engine::{Engine, SlowPolicy, SubscribeOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A broker is just an engine: it accepts subscriptions and published events.
    let broker = Engine::builder()
        .cores(2)
        .listen("tcp://127.0.0.1:0")
        .build()?;
    let ep = broker.endpoints()[0].to_string();
    let wait = Duration::from_secs(5);

    let client = Engine::builder().cores(1).build()?;
    let eu = client.client().connect(&ep)?;
    let all = client.client().connect(&ep)?;
    let publisher = client.client().connect(&ep)?;

    // `*` matches one token, `>` the rest. Dropping a subscription unsubscribes.
    let eu_orders = eu.subscribe("orders.eu.*", SubscribeOptions::new())?;
    let every_order = all.subscribe("orders.>", SubscribeOptions::new())?;
    // In-process subscribers see what is published on the broker, on any of its cores.
    let audit = broker.subscribe("orders.>", SubscribeOptions::new())?;
    // A queue group: each event goes to one of its members.
    let w1 = eu.subscribe("jobs.*", SubscribeOptions::new().group("workers"))?;
    let w2 = all.subscribe("jobs.*", SubscribeOptions::new().group("workers"))?;
    // A subscriber that reads late: the broker keeps at most 4 events for it and drops the
    // oldest; the gap tells it how many it lost.
    let slow = all.subscribe(
        "ticks",
        SubscribeOptions::new()
            .queue_depth(4)
            .on_full(SlowPolicy::DropOldest),
    )?;
    // Subscribing returns at once; wait until the broker holds all six.
    while broker.total_stats().subscriptions() < 6 {
        std::thread::sleep(Duration::from_millis(5));
    }

    publisher.publish("orders.eu.created", &b"order 1"[..])?;
    publisher.publish("orders.us.created", &b"order 2"[..])?;
    let e = eu_orders.recv_timeout(wait)?;
    println!("eu:    {} {:?}", e.topic_str(), e.payload());
    for _ in 0..2 {
        let e = every_order.recv_timeout(wait)?;
        println!("all:   {} {:?}", e.topic_str(), e.payload());
        let e = audit.recv_timeout(wait)?;
        println!("audit: {} {:?}", e.topic_str(), e.payload());
    }

    for i in 0..4u8 {
        publisher.publish("jobs.build", vec![i])?;
    }
    let mut jobs = [0, 0];
    for (n, w) in jobs.iter_mut().zip([&w1, &w2]) {
        while w.recv_timeout(Duration::from_millis(200)).is_ok() {
            *n += 1;
        }
    }
    println!("workers got {} and {} of 4 jobs", jobs[0], jobs[1]);
    assert_eq!(jobs[0] + jobs[1], 4);

    for i in 0..10u8 {
        publisher.publish("ticks", vec![i])?;
    }
    let mut lost = 0;
    let mut got = 0;
    while got + lost < 10 {
        let e = slow.recv_timeout(wait)?;
        lost += e.lost();
        got += 1;
    }
    println!("slow subscriber: {got} received, {lost} lost (and told so)");

    // The broker's counters: subscriptions held, events delivered and dropped.
    let st = broker.total_stats();
    println!(
        "broker: {} subscriptions, {} events out, {} dropped",
        st.subscriptions(),
        st.events_out(),
        st.events_dropped()
    );
    drop((eu, all, publisher));
    client.shutdown(Duration::from_secs(1));
    broker.shutdown(Duration::from_secs(1));
    Ok(())
}
