//! The simulated practice: one doctor, synthetic patients, appointments.

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDateTime, TimeDelta};
use serde_json::{Map, Value, json};

use crate::tokens::DEFAULT_USER;

/// The id of the practice's doctor, who is also the API user.
pub const DOCTOR_ID: u64 = 101;

/// The first id the simulator gives an appointment (the id in DrChrono's own 409 example).
pub const FIRST_APPOINTMENT_ID: u64 = 323_351_400;

const FIRST_NAMES: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
];
const LAST_NAMES: [&str; 8] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
];

/// DRF-style field errors: `{"field": ["message"]}`.
pub(crate) type FieldErrors = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, Copy)]
struct Appointment {
    id: u64,
    office: u64,
    exam_room: u64,
    start: NaiveDateTime,
    end: NaiveDateTime,
}

#[derive(Debug)]
pub(crate) struct Practice {
    synthetic_patients: u64,
    created_patients: HashMap<u64, Value>,
    next_patient_id: u64,
    appointments: Vec<Appointment>,
    appointment_json: HashMap<u64, Value>,
    allow_overlaps: bool,
}

/// The outcome of creating an appointment.
#[derive(Debug)]
pub(crate) enum Created {
    Ok(Value),
    Invalid(FieldErrors),
    Overlaps(u64),
}

impl Practice {
    pub(crate) fn new(synthetic_patients: u64, allow_overlaps: bool) -> Self {
        Self {
            synthetic_patients,
            created_patients: HashMap::new(),
            next_patient_id: synthetic_patients.saturating_add(1),
            appointments: Vec::new(),
            appointment_json: HashMap::new(),
            allow_overlaps,
        }
    }

    /// `GET /api/users/current` for `username`: the doctor for the default user, a staff
    /// member of the doctor's practice for any other.
    pub(crate) fn current_user(username: &str) -> Value {
        let is_doctor = username == DEFAULT_USER;
        // A stable id per staff member, distinct from the doctor's.
        let id = if is_doctor {
            DOCTOR_ID
        } else {
            1000 + username
                .bytes()
                .fold(0u64, |h, b| (h * 31 + u64::from(b)) % 1_000_000)
        };
        json!({
            "id": id,
            "username": username,
            "doctor": DOCTOR_ID,
            "is_doctor": is_doctor,
            "is_staff": !is_doctor,
            "practice_group": 1001,
        })
    }

    pub(crate) fn patient_count(&self) -> u64 {
        self.next_patient_id.saturating_sub(1)
    }

    pub(crate) fn patient(&self, id: u64) -> Option<Value> {
        if (1..=self.synthetic_patients).contains(&id) {
            let i = id as usize;
            return Some(json!({
                "id": id,
                "chart_id": format!("SIM{id:08}"),
                "doctor": DOCTOR_ID,
                "first_name": FIRST_NAMES[i % FIRST_NAMES.len()],
                "last_name": LAST_NAMES[(i / FIRST_NAMES.len()) % LAST_NAMES.len()],
                "date_of_birth": format!("19{:02}-{:02}-{:02}", 40 + i % 60, 1 + i % 12, 1 + i % 28),
                "gender": if i.is_multiple_of(2) { "Female" } else { "Male" },
            }));
        }
        self.created_patients.get(&id).cloned()
    }

    pub(crate) fn create_patient(
        &mut self,
        body: &Map<String, Value>,
    ) -> Result<Value, FieldErrors> {
        let mut errors = FieldErrors::new();
        match body.get("doctor") {
            None | Some(Value::Null) => required(&mut errors, "doctor"),
            Some(v) => match as_id(v) {
                Some(DOCTOR_ID) => {}
                Some(id) => does_not_exist(&mut errors, "doctor", id),
                None => invalid_pk(&mut errors, "doctor"),
            },
        }
        match body.get("gender").and_then(Value::as_str) {
            Some("Male" | "Female" | "Other" | "UNK") => {}
            Some(other) => {
                errors.insert(
                    "gender".into(),
                    vec![format!("\"{other}\" is not a valid choice.")],
                );
            }
            None => required(&mut errors, "gender"),
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let id = self.next_patient_id;
        self.next_patient_id += 1;
        let mut patient = body.clone();
        patient.insert("id".into(), json!(id));
        let patient = Value::Object(patient);
        self.created_patients.insert(id, patient.clone());
        Ok(patient)
    }

    pub(crate) fn appointment(&self, id: u64) -> Option<Value> {
        self.appointment_json.get(&id).cloned()
    }

    pub(crate) fn create_appointment(&mut self, body: &Map<String, Value>) -> Created {
        let mut errors = FieldErrors::new();
        let id_field = |name: &str, errors: &mut FieldErrors| -> Option<u64> {
            match body.get(name) {
                None | Some(Value::Null) => {
                    required(errors, name);
                    None
                }
                Some(v) => match as_id(v) {
                    Some(id) if id >= 1 => Some(id),
                    Some(_) => {
                        errors.insert(
                            name.into(),
                            vec!["Ensure this value is greater than or equal to 1.".into()],
                        );
                        None
                    }
                    None => {
                        errors.insert(name.into(), vec!["A valid integer is required.".into()]);
                        None
                    }
                },
            }
        };
        let doctor = id_field("doctor", &mut errors);
        let patient = id_field("patient", &mut errors);
        let office = id_field("office", &mut errors);
        let exam_room = id_field("exam_room", &mut errors);
        let duration = id_field("duration", &mut errors);
        if let Some(doctor) = doctor.filter(|&d| d != DOCTOR_ID) {
            errors.remove("doctor");
            does_not_exist(&mut errors, "doctor", doctor);
        }
        if let Some(patient) = patient.filter(|&p| self.patient(p).is_none()) {
            errors.remove("patient");
            does_not_exist(&mut errors, "patient", patient);
        }
        let start = match body.get("scheduled_time") {
            None | Some(Value::Null) => {
                required(&mut errors, "scheduled_time");
                None
            }
            Some(v) => {
                let parsed = v
                    .as_str()
                    .and_then(|s| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").ok());
                if parsed.is_none() {
                    errors.insert(
                        "scheduled_time".into(),
                        vec![
                            "Datetime has wrong format. Use one of these formats instead: \
                              YYYY-MM-DDThh:mm[:ss[.uuuuuu]]."
                                .into(),
                        ],
                    );
                }
                parsed
            }
        };
        let (Some(office), Some(exam_room), Some(duration), Some(start), true) =
            (office, exam_room, duration, start, errors.is_empty())
        else {
            return Created::Invalid(errors);
        };
        let minutes = i64::try_from(duration.min(24 * 60)).unwrap_or(24 * 60);
        let end = start + TimeDelta::minutes(minutes);
        if !self.allow_overlaps
            && let Some(other) = self.appointments.iter().find(|a| {
                a.office == office && a.exam_room == exam_room && a.start < end && start < a.end
            })
        {
            return Created::Overlaps(other.id);
        }
        let id = FIRST_APPOINTMENT_ID + self.appointments.len() as u64;
        self.appointments.push(Appointment {
            id,
            office,
            exam_room,
            start,
            end,
        });
        let mut json = body.clone();
        json.insert("id".into(), json!(id));
        let json = Value::Object(json);
        self.appointment_json.insert(id, json.clone());
        Created::Ok(json)
    }
}

fn as_id(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| n.as_i64().map(|_| 0)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn required(errors: &mut FieldErrors, field: &str) {
    errors.insert(field.into(), vec!["This field is required.".into()]);
}

fn invalid_pk(errors: &mut FieldErrors, field: &str) {
    errors.insert(
        field.into(),
        vec!["Incorrect type. Expected pk value, received str.".into()],
    );
}

fn does_not_exist(errors: &mut FieldErrors, field: &str, id: u64) {
    errors.insert(
        field.into(),
        vec![format!("Invalid pk \"{id}\" - object does not exist.")],
    );
}
