//! The exports: schema.org ClaimReview JSON-LD (one claim, all claims, and embedded in the
//! claim page) and the ACLED-layout CSV of event-like claims, read as a fact-check tool and a
//! researcher would (serde_json, the `csv` crate) and compared with what gRPC says.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use claimledger::pb;
use common::*;
use serde_json::Value;

const ACLED: [&str; 31] = [
    "event_id_cnty",
    "event_date",
    "year",
    "time_precision",
    "disorder_type",
    "event_type",
    "sub_event_type",
    "actor1",
    "assoc_actor_1",
    "inter1",
    "actor2",
    "assoc_actor_2",
    "inter2",
    "interaction",
    "civilian_targeting",
    "iso",
    "region",
    "country",
    "admin1",
    "admin2",
    "admin3",
    "location",
    "latitude",
    "longitude",
    "geo_precision",
    "source",
    "source_scale",
    "notes",
    "fatalities",
    "tags",
    "timestamp",
];

const EVENT_KINDS: [pb::ClaimKind; 5] = [
    pb::ClaimKind::Strike,
    pb::ClaimKind::Interception,
    pb::ClaimKind::TerritorialControl,
    pb::ClaimKind::CasualtyFigure,
    pb::ClaimKind::PrisonerExchange,
];

/// Every claim, with its effective status, through gRPC ListClaims (after the index caught up).
async fn all_claims(c: &mut Clients) -> Vec<pb::ClaimListItem> {
    let size = c.size().await;
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .claims
            .list_claims(pb::ListClaimsRequest {
                min_size: size,
                page_size: 500,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("ListClaims")
            .into_inner();
        out.extend(page.claims);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

fn is_rfc3339(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T'
}

/// Checks the fields Google's Fact Check tools read.
fn check_review(v: &Value, claim: &pb::Claim, status: pb::Status, claimant: &str) {
    assert_eq!(v["@context"], "https://schema.org");
    assert_eq!(v["@type"], "ClaimReview");
    assert_eq!(v["claimReviewed"], claim.summary.as_str());
    let url = v["url"].as_str().expect("a url");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url.ends_with(&format!("/claims/{}", claim.id)), "{url}");
    assert!(
        is_rfc3339(v["datePublished"].as_str().expect("a date")),
        "{v}"
    );
    assert_eq!(v["author"]["@type"], "Organization");
    assert!(!v["author"]["name"].as_str().expect("a name").is_empty());
    let rating = &v["reviewRating"];
    assert_eq!(rating["@type"], "Rating");
    let words = rating["alternateName"].as_str().expect("alternateName");
    let want = match status {
        pb::Status::Confirmed => "Confirmed",
        pb::Status::Corroborated => "Corroborated, not confirmed",
        pb::Status::Inconclusive => "Inconclusive",
        pb::Status::Disputed => "Disputed",
        pb::Status::Refuted => "Refuted",
        pb::Status::Retracted => "Retracted by the claimant",
        other => panic!("no review for {other:?}"),
    };
    assert_eq!(words, want);
    if status != pb::Status::Retracted {
        let value = rating["ratingValue"].as_u64().expect("ratingValue");
        assert!((1..=5).contains(&value));
        assert_eq!(rating["bestRating"], 5);
        assert_eq!(rating["worstRating"], 1);
    }
    let item = &v["itemReviewed"];
    assert_eq!(item["@type"], "Claim");
    assert_eq!(item["author"]["name"], claimant);
    assert!(is_rfc3339(item["datePublished"].as_str().expect("a date")));
    if let Some(first) = claim.urls.first() {
        assert_eq!(item["firstAppearance"]["url"], first.as_str());
        assert_eq!(
            item["appearance"].as_array().expect("appearances").len(),
            claim.urls.len()
        );
    }
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimreview_for_every_reviewed_claim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let addr = server.addr;
    let mut c = server.clients().await;
    let imported = import_article(&mut c).await;
    // A verdict, so a REFUTED claim is among them too.
    let vance = imported.claim("claim-vance-impasse").to_string();
    let ev = c
        .add_evidence(
            "ev-vance",
            &vance,
            evidence("ua-air-force", pb::Stance::Contradicts, 2),
        )
        .await
        .evidence
        .expect("evidence")
        .id;
    c.claims
        .record_verdict(pb::RecordVerdictRequest {
            request_id: "v-vance".into(),
            claim_id: vance.clone(),
            verdict: Some(pb::Verdict {
                decision: pb::Decision::Refuted as i32,
                rationale: "demo: the reviewers found the quote misattributed".into(),
                reviewer: "demo-desk".into(),
                evidence_ids: vec![ev],
                ..Default::default()
            }),
        })
        .await
        .expect("RecordVerdict");

    let claims = all_claims(&mut c).await;
    let reviewed: BTreeMap<String, (pb::Claim, pb::Status)> = claims
        .iter()
        .filter(|i| i.status != pb::Status::Claimed as i32)
        .map(|i| {
            let claim = i.claim.clone().expect("a claim");
            let status = pb::Status::try_from(i.status).expect("a status");
            (claim.id.clone(), (claim, status))
        })
        .collect();
    assert!(reviewed.len() >= 4, "the demo data has reviewed claims");
    assert_eq!(reviewed[&vance].1, pb::Status::Refuted);
    assert!(reviewed.len() < claims.len(), "and unreviewed ones");

    // The bulk export: exactly the reviewed claims, one JSON object per line.
    let a = http_get(addr, "/export/claimreview.jsonl").await;
    assert_eq!(a.status, 200);
    let mut seen = BTreeMap::new();
    for line in a.text().lines() {
        let v: Value = serde_json::from_str(line).expect("each line is JSON");
        let id = v["url"]
            .as_str()
            .and_then(|u| u.rsplit('/').next())
            .expect("a claim url")
            .to_string();
        seen.insert(id, v);
    }
    assert_eq!(
        seen.keys().collect::<BTreeSet<_>>(),
        reviewed.keys().collect::<BTreeSet<_>>(),
        "one review per reviewed claim, none for claims not reviewed"
    );
    for (id, v) in &seen {
        let (claim, status) = &reviewed[id];
        let claimant = c
            .sources
            .get_source(pb::GetSourceRequest {
                id: claim.claimant_id.clone(),
            })
            .await
            .expect("GetSource")
            .into_inner()
            .source
            .expect("a source")
            .name;
        check_review(v, claim, *status, &claimant);

        // One claim's review, and the one its page embeds, are the same.
        let one = http_get(addr, &format!("/claims/{id}/claimreview.json")).await;
        assert_eq!(one.status, 200);
        assert!(one
            .header("content-type")
            .starts_with("application/ld+json"));
        let one: Value = serde_json::from_slice(&one.body).expect("JSON-LD");
        assert_eq!(&one, v);
        let page = http_get(addr, &format!("/claims/{id}")).await.text();
        let start = page
            .find(r#"<script type="application/ld+json" id="claimreview">"#)
            .expect("the page embeds its ClaimReview");
        let body = &page[start..];
        let body = &body[body.find('>').expect("tag end") + 1..];
        let body = &body[..body.find("</script>").expect("script end")];
        let embedded: Value = serde_json::from_str(body).expect("embedded JSON-LD");
        assert_eq!(&embedded, v);
    }

    // A claim not reviewed yet, and one that does not exist: no review.
    let drone = imported.claim("claim-drones-35");
    assert!(!reviewed.contains_key(drone));
    let a = http_get(addr, &format!("/claims/{drone}/claimreview.json")).await;
    assert_eq!(a.status, 404, "{}", a.text());
    assert!(a.text().contains("not been reviewed"));
    let page = http_get(addr, &format!("/claims/{drone}")).await.text();
    assert!(!page.contains("application/ld+json"));
    let a = http_get(addr, "/claims/c-0000000000000000/claimreview.json").await;
    assert_eq!(a.status, 404);

    server.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_csv_has_acled_columns_and_a_row_per_event_like_claim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let addr = server.addr;
    let mut c = server.clients().await;
    import_article(&mut c).await;
    // More claims than one page of the export, and text that needs CSV quoting.
    c.register(source("x", "", pb::Role::NonParty, pb::Reliability::B, ""))
        .await;
    let tricky = "Strike on \"depot\", <script>alert(1)</script>; two parts";
    let mut ids_tricky = String::new();
    for i in 0..450 {
        let summary = if i == 7 {
            tricky.to_string()
        } else {
            format!("strike number {i}")
        };
        let mut cl = claim(pb::ClaimKind::Strike, "x", &summary);
        cl.places = vec![pb::Place {
            country: "UA".into(),
            admin1: "Kharkiv".into(),
            locality: "Kupiansk".into(),
            lat: Some(49.7),
            lon: Some(37.6),
            precision: pb::PlacePrecision::Locality as i32,
            ..Default::default()
        }];
        let r = c.submit(&format!("x-{i}"), cl).await;
        if i == 7 {
            ids_tricky = r.claim.expect("a claim").id;
        }
    }
    // A non-event claim: not in the CSV.
    c.submit(
        "x-statement",
        claim(pb::ClaimKind::Statement, "x", "a statement"),
    )
    .await;

    let claims = all_claims(&mut c).await;
    let events: BTreeMap<String, pb::ClaimListItem> = claims
        .into_iter()
        .filter(|i| {
            EVENT_KINDS
                .iter()
                .any(|k| *k as i32 == i.claim.as_ref().map_or(0, |c| c.kind))
        })
        .map(|i| (i.claim.clone().expect("a claim").id, i))
        .collect();
    assert!(events.len() > 450);

    let a = http_get(addr, "/export/events.csv").await;
    assert_eq!(a.status, 200);
    assert!(a.header("content-type").starts_with("text/csv"));
    let mut reader = csv::Reader::from_reader(&a.body[..]);
    let headers: Vec<String> = reader
        .headers()
        .expect("a header row")
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(headers, ACLED, "ACLED's columns in ACLED's order");
    let col = |name: &str| ACLED.iter().position(|c| *c == name).expect("a column");
    let mut rows = BTreeMap::new();
    for r in reader.records() {
        let r = r.expect("a well-formed CSV row");
        assert_eq!(r.len(), ACLED.len());
        rows.insert(r[col("event_id_cnty")].to_string(), r);
    }
    assert_eq!(
        rows.keys().collect::<BTreeSet<_>>(),
        events.keys().collect::<BTreeSet<_>>(),
        "one row per event-like claim"
    );
    for (id, r) in &rows {
        let item = &events[id];
        let status = pb::Status::try_from(item.status)
            .expect("a status")
            .as_str_name()
            .trim_start_matches("STATUS_")
            .to_lowercase();
        let date = &r[col("event_date")];
        assert_eq!(date.len(), 10, "{id}: {date}");
        assert_eq!(&date[..4], &r[col("year")]);
        assert!(["1", "2", "3"].contains(&&r[col("time_precision")]));
        assert!(!r[col("event_type")].is_empty());
        assert!(r[col("tags")].contains(&format!("claimledger status: {status}")));
        let confirmed = if item.confirmed {
            "confirmed"
        } else {
            "not confirmed"
        };
        assert!(r[col("notes")].contains(confirmed), "{}", &r[col("notes")]);
        assert!(r[col("timestamp")].parse::<i64>().is_ok());
    }
    let t = &rows[&ids_tricky];
    assert!(
        t[col("notes")].starts_with(tricky),
        "quoting round-trips: {}",
        &t[col("notes")]
    );
    assert_eq!(&t[col("country")], "UA");
    assert_eq!(&t[col("admin1")], "Kharkiv");
    assert_eq!(&t[col("location")], "Kupiansk");
    assert_eq!(&t[col("latitude")], "49.7");
    assert_eq!(&t[col("longitude")], "37.6");
    assert_eq!(&t[col("geo_precision")], "1");
    assert_eq!(&t[col("source")], "Test source x");
    assert_eq!(&t[col("event_type")], "Explosions/Remote violence");

    server.stop().await;
}
}
