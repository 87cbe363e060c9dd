//! Decoding PostgreSQL rows into documents and change events, through the decoding
//! both backends share.

use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sync_core::{ChangeEvent, Document};

use crate::StoreResult;
use crate::rows::{self, ColumnError, Columns};

pub(super) fn document_from_row(row: &PgRow) -> StoreResult<Document> {
    rows::document(row)
}

pub(super) fn event_from_row(row: &PgRow) -> StoreResult<ChangeEvent> {
    rows::event(row, 0)
}

/// JSON columns are selected as text (`::text`), so a corrupt value is reported with its id.
impl Columns for PgRow {
    fn text(&self, index: usize) -> Result<String, ColumnError> {
        Ok(self.try_get(index)?)
    }

    fn optional_text(&self, index: usize) -> Result<Option<String>, ColumnError> {
        Ok(self.try_get(index)?)
    }

    fn integer(&self, index: usize) -> Result<i64, ColumnError> {
        Ok(self.try_get(index)?)
    }

    fn optional_integer(&self, index: usize) -> Result<Option<i64>, ColumnError> {
        Ok(self.try_get(index)?)
    }

    fn json<T: DeserializeOwned>(&self, index: usize) -> Result<T, ColumnError> {
        let text: &str = self.try_get(index)?;
        Ok(serde_json::from_str(text)?)
    }

    fn optional_json<T: DeserializeOwned>(&self, index: usize) -> Result<Option<T>, ColumnError> {
        let text: Option<&str> = self.try_get(index)?;
        Ok(text.map(serde_json::from_str).transpose()?)
    }
}
