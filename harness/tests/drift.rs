//! Drift reports between two recorded runs: every kind of difference is found and named.

use serde_json::json;
use xtenant_harness::drift::{Difference, Recorder, Recording, compare, render_report};

const GROUP: &str = "https://127.0.0.1:4000/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590/resourcegroups/rg-a?api-version=2024-11-01";
const GROUP_LIVE: &str = "https://management.azure.com/subscriptions/6c3b1d1e-3a5b-4a4e-9d7e-2f0c7c1f2a90/resourcegroups/rg-a?api-version=2024-11-01";
const CLUSTER: &str = "https://127.0.0.1:4000/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590/resourceGroups/rg-a/providers/Microsoft.ContainerService/managedClusters/aks-a";
const ROLE: &str = "https://127.0.0.1:4000/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590/providers/Microsoft.Authorization/roleAssignments/8d2f5a63-7c55-4a6b-9a57-3e2d3f0c9b11";

fn baseline() -> Recording {
    let recorder = Recorder::default();
    recorder.record(
        "PUT",
        GROUP,
        201,
        &json!({"id": "x", "location": "eastus", "tags": {}}),
    );
    recorder.record(
        "GET",
        CLUSTER,
        200,
        &json!({"properties": {"oidcIssuerProfile": {"issuerUrl": "u"}}}),
    );
    recorder.record(
        "PUT",
        ROLE,
        403,
        &json!({"error": {"code": "AuthorizationFailed", "message": "m"}}),
    );
    recorder.record("DELETE", GROUP, 202, &serde_json::Value::Null);
    recorder.snapshot()
}

fn compared() -> Recording {
    let recorder = Recorder::default();
    recorder.record(
        "PUT",
        GROUP_LIVE,
        200,
        &json!({"id": "y", "location": "eastus", "managedBy": null}),
    );
    recorder.record(
        "GET",
        CLUSTER,
        200,
        &json!({"properties": {"oidcIssuerProfile": {"issuerUrl": "u"}}}),
    );
    recorder.record(
        "PUT",
        ROLE,
        403,
        &json!({"error": {"code": "RoleAssignmentExists", "message": "m"}}),
    );
    recorder.record("GET", GROUP, 200, &json!({"id": "y"}));
    recorder.snapshot()
}

#[test]
fn identical_runs_have_no_drift() {
    assert!(compare(&baseline(), &baseline()).is_empty());
}

#[test]
fn every_kind_of_difference_is_reported() {
    let group = "PUT /subscriptions/{guid}/resourcegroups/rg-a".to_owned();
    let role = "PUT /subscriptions/{guid}/providers/Microsoft.Authorization/roleAssignments/{guid}"
        .to_owned();

    let differences = compare(&baseline(), &compared());

    assert!(differences.contains(&Difference::StatusChanged {
        operation: group.clone(),
        before: [201].into(),
        after: [200].into(),
    }));
    assert!(differences.contains(&Difference::FieldMissing {
        operation: group.clone(),
        field: "tags".into(),
    }));
    assert!(differences.contains(&Difference::FieldNew {
        operation: group.clone(),
        field: "managedBy".into(),
    }));
    assert!(differences.contains(&Difference::ErrorCodeNew {
        operation: role.clone(),
        code: "RoleAssignmentExists".into(),
    }));
    assert!(differences.contains(&Difference::ErrorCodeMissing {
        operation: role,
        code: "AuthorizationFailed".into(),
    }));
    assert!(differences.contains(&Difference::OperationMissing {
        operation: "DELETE /subscriptions/{guid}/resourcegroups/rg-a".into(),
    }));
    assert!(differences.contains(&Difference::OperationNew {
        operation: "GET /subscriptions/{guid}/resourcegroups/rg-a".into(),
    }));
    assert_eq!(differences.len(), 7, "{differences:#?}");
}

#[test]
fn recording_round_trips_and_report_lists_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.json");
    let recorder = Recorder::default();
    recorder.record("PUT", GROUP, 201, &json!({"id": "x"}));
    recorder.write(&path).unwrap();

    let read = Recording::read(&path).unwrap();
    assert_eq!(read, recorder.snapshot());

    let differences = compare(&baseline(), &compared());
    let report = render_report("fake.json", "live.json", &differences);
    assert!(report.starts_with("# Drift from fake.json to live.json"));
    assert!(report.contains("new error code RoleAssignmentExists"));
    assert_eq!(report.lines().filter(|l| l.starts_with("- ")).count(), 7);
}
