//! Resources and DrChrono's error answers: 400, 403, 404, 405, 409, faults, stats.

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;
use support::{Http, SimConfig, spawn};

fn appointment(exam_room: u64, time: &str) -> serde_json::Value {
    json!({
        "doctor": drchrono_sim::DOCTOR_ID,
        "patient": 7,
        "office": 1,
        "exam_room": exam_room,
        "scheduled_time": time,
        "duration": 30,
    })
}

#[tokio::test]
async fn current_user_and_patients() {
    let sim = spawn(SimConfig::default().patients(5)).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let user = http.get("/api/users/current", &token).await.json();
    for key in [
        "id",
        "username",
        "doctor",
        "is_doctor",
        "is_staff",
        "practice_group",
    ] {
        assert!(user.get(key).is_some(), "{key} in {user}");
    }
    let page = http.get("/api/patients?page_size=2", &token).await.json();
    assert_eq!(page["results"].as_array().unwrap().len(), 2);
    assert_eq!(page["previous"], serde_json::Value::Null);
    let next = page["next"].as_str().unwrap();
    let path = next
        .strip_prefix(&http.base)
        .expect("absolute link to the simulator");
    let page = http.get(path, &token).await.json();
    assert_eq!(page["results"][0]["id"], 3);
    let last = http
        .get("/api/patients?page_size=2&cursor=4", &token)
        .await
        .json();
    assert_eq!(last["results"].as_array().unwrap().len(), 1);
    assert_eq!(last["next"], serde_json::Value::Null);
    let one = http.get("/api/patients/5", &token).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["id"], 5);
}

#[tokio::test]
async fn missing_patient_is_404() {
    let sim = spawn(SimConfig::default().patients(5)).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let reply = http.get("/api/patients/6", &token).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json(), json!({"detail": "Not found."}));
    // No route: Django's page, not DRF's JSON (tests/bad_input.rs has more paths).
    let reply = http.get("/api/no-such-resource", &token).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
}

#[tokio::test]
async fn patch_on_the_collection_is_405_with_drchronos_detail() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let auth = format!("Bearer {token}");
    let reply = http
        .send(
            Method::PATCH,
            "/api/patients?since=2024-06-11",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            "{}",
        )
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        reply.body,
        Bytes::from_static(br#"{"detail":"Method \"PATCH\" not allowed."}"#)
    );
}

#[tokio::test]
async fn invalid_patient_gets_field_errors() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let reply = http
        .post_json("/api/patients", &token, &json!({"first_name": "Ada"}))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json(),
        json!({"doctor": ["This field is required."], "gender": ["This field is required."]})
    );
    let reply = http
        .post_json(
            "/api/patients",
            &token,
            &json!({"doctor": 5, "gender": "Female"}),
        )
        .await;
    assert_eq!(
        reply.json(),
        json!({"doctor": ["Invalid pk \"5\" - object does not exist."]})
    );
    let reply = http
        .post_json(
            "/api/patients",
            &token,
            &json!({"doctor": drchrono_sim::DOCTOR_ID, "gender": "Female", "first_name": "Ada"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.json()["id"].as_u64().unwrap();
    assert_eq!(
        http.get(&format!("/api/patients/{id}"), &token)
            .await
            .json()["first_name"],
        "Ada"
    );
}

#[tokio::test]
async fn appointments_overlap_only_in_the_same_exam_room() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let first = http
        .post_json(
            "/api/appointments",
            &token,
            &appointment(1, "2026-01-05T10:00:00"),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let id = first.json()["id"].as_u64().unwrap();
    let overlap = http
        .post_json(
            "/api/appointments",
            &token,
            &appointment(1, "2026-01-05T10:15:00"),
        )
        .await;
    assert_eq!(overlap.status, StatusCode::CONFLICT);
    assert_eq!(
        overlap.json(),
        json!({"error": format!("Appointment overlaps with {id}")})
    );
    let other_room = http
        .post_json(
            "/api/appointments",
            &token,
            &appointment(2, "2026-01-05T10:15:00"),
        )
        .await;
    assert_eq!(other_room.status, StatusCode::CREATED);
    let back_to_back = http
        .post_json(
            "/api/appointments",
            &token,
            &appointment(1, "2026-01-05T10:30:00"),
        )
        .await;
    assert_eq!(back_to_back.status, StatusCode::CREATED);
    let fetched = http.get(&format!("/api/appointments/{id}"), &token).await;
    assert_eq!(fetched.json()["exam_room"], 1);
}

#[tokio::test]
async fn allow_overlaps_accepts_overlapping_appointments() {
    let sim = spawn(SimConfig::default().allow_overlaps(true))
        .await
        .unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    for _ in 0..2 {
        let reply = http
            .post_json(
                "/api/appointments",
                &token,
                &appointment(1, "2026-01-05T10:00:00"),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
}

#[tokio::test]
async fn appointment_field_errors() {
    let sim = spawn(SimConfig::default().patients(10)).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    let reply = http
        .post_json(
            "/api/appointments",
            &token,
            &json!({"doctor": drchrono_sim::DOCTOR_ID}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let errors = reply.json();
    for field in [
        "patient",
        "office",
        "exam_room",
        "scheduled_time",
        "duration",
    ] {
        assert_eq!(errors[field], json!(["This field is required."]), "{field}");
    }
    let mut bad = appointment(1, "tomorrow at ten");
    bad["patient"] = json!(11);
    bad["office"] = json!("one");
    let errors = http
        .post_json("/api/appointments", &token, &bad)
        .await
        .json();
    assert_eq!(
        errors["patient"],
        json!(["Invalid pk \"11\" - object does not exist."])
    );
    assert_eq!(errors["office"], json!(["A valid integer is required."]));
    assert!(
        errors["scheduled_time"][0]
            .as_str()
            .unwrap()
            .starts_with("Datetime has wrong format.")
    );
}

#[tokio::test]
async fn without_calendar_write_appointments_are_forbidden() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let tokens = sim.simulator().reauthorize(Some(
        "user:read patients:read calendar:read clinical:read clinical:write",
    ));
    let reply = http
        .post_json(
            "/api/appointments",
            &tokens.access_token,
            &appointment(1, "2026-01-05T10:00:00"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.json(),
        json!({"detail": "You do not have permission to perform this action."})
    );
    assert_eq!(
        http.get("/api/patients/1", &tokens.access_token)
            .await
            .status,
        StatusCode::OK
    );
    let stats = sim.stats();
    // Permissions are checked before throttling: the 403 was not counted as accepted.
    assert_eq!((stats.forbidden, stats.accepted), (1, 1));
}

#[tokio::test]
async fn faults_follow_the_rate_and_the_seed() {
    async fn run(seed: u64) -> (Vec<u16>, drchrono_sim::Stats) {
        let config = SimConfig::default()
            .fault_rate(0.3)
            .seed(seed)
            .max_per_second(10_000)
            .max_per_window(10_000)
            .max_per_hour(10_000);
        let sim = spawn(config).await.unwrap();
        let http = Http::new(&sim);
        let token = http.access_token(&sim).await;
        let mut statuses = Vec::new();
        for i in 1..=400 {
            let reply = http.get(&format!("/api/patients/{i}"), &token).await;
            if reply.status.as_u16() == 502 || reply.status.as_u16() == 504 {
                assert_eq!(reply.header("content-type"), Some("text/html"));
                assert!(reply.body.starts_with(b"<html>"), "{:?}", reply.body);
            }
            statuses.push(reply.status.as_u16());
        }
        (statuses, sim.stats())
    }
    let (a, stats) = run(7).await;
    let (b, _) = run(7).await;
    let (c, _) = run(8).await;
    assert_eq!(a, b, "same seed, same faults");
    assert_ne!(a, c, "another seed, other faults");
    let faults = a.iter().filter(|&&s| s >= 500).count();
    assert_eq!(faults as u64, stats.faults);
    assert!(
        (80..=160).contains(&faults),
        "{faults} faults of 400 at rate 0.3"
    );
    for status in [500, 502, 503, 504] {
        assert!(a.contains(&status), "{status} drawn");
    }
    assert!(
        a.iter()
            .all(|&s| s == 200 || [500, 502, 503, 504].contains(&s))
    );
}

#[tokio::test]
async fn stats_endpoint_reports_every_counter() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let http = Http::new(&sim);
    let token = http.access_token(&sim).await;
    http.get("/api/users/current", &token).await;
    http.get("/api/users/current", "bad").await;
    let reply = http
        .send(Method::GET, "/sim/stats", &[], Bytes::new())
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let stats = reply.json();
    for key in [
        "requests",
        "accepted",
        "unauthorized",
        "token_refreshes",
        "invalid_grant",
        "invalid_client",
        "faults",
        "peak_second",
        "peak_window",
        "peak_hour",
    ] {
        assert!(stats[key].is_u64(), "{key} in {stats}");
    }
    for key in ["second", "window", "hour"] {
        assert!(stats["throttled"][key].is_u64(), "throttled.{key}");
    }
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["accepted"], 1);
    assert_eq!(stats["unauthorized"], 1);
    assert_eq!(stats["token_refreshes"], 1);
    assert_eq!(stats["peak_second"], 1);
}
