//! Drawing the interactive client: header (user, connection, pending count, last synced
//! sequence), task table, the other devices' activity, status line, prompt, key help.
//!
//! Indicators are words as well as colours (`connected`/`offline`, `synced`/`pending`/
//! `conflict`, `[x]`), so they read on a monochrome terminal and in `tmux capture-pane`.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use sync_client::DocStatus;

use crate::app::{App, Mode};
use crate::task::{Priority, Task};

/// Draws the whole screen.
pub(crate) fn render(frame: &mut Frame<'_>, app: &mut App<'_>) {
    let prompt_height = if matches!(app.mode, Mode::Browse) { 0 } else { 3 };
    let [header, list, activity, status, prompt, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(prompt_height),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    render_header(frame, header, app);
    render_tasks(frame, list, app);
    let activity_text = match &app.activity {
        Some(line) => format!("activity: {line}"),
        None => "activity: none from your other devices yet".to_owned(),
    };
    frame.render_widget(Paragraph::new(activity_text).magenta(), activity);
    let style = if app.status.error { Style::new().fg(Color::Red) } else { Style::new().fg(Color::Cyan) };
    frame.render_widget(Paragraph::new(app.status.text.as_str()).style(style), status);
    render_prompt(frame, prompt, app);
    frame.render_widget(Paragraph::new(help_text(&app.mode)).dark_gray(), help);
}

fn render_header(frame: &mut Frame<'_>, area: Rect, app: &App<'_>) {
    let connection = if app.sync.connected {
        Span::styled(" connected ", Style::new().fg(Color::Black).bg(Color::Green).bold())
    } else {
        Span::styled(" offline ", Style::new().fg(Color::White).bg(Color::Red).bold())
    };
    let facts = format!("  {} pending  |  last synced #{} ", app.sync.pending, app.sync.sequence);
    let right = Line::from(vec![connection, Span::raw(facts)]);
    let [left_area, right_area] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(right.width() as u16)]).areas(area);
    let mut title = vec![Span::raw(" Tasks ").bold(), Span::raw(format!("for {}", app.user))];
    if let Some(id) = &app.user_id {
        title.push(Span::raw(format!(" (user id {id})")).dark_gray());
    }
    let title = Line::from(title);
    frame.render_widget(title, left_area);
    frame.render_widget(right, right_area);
}

fn render_tasks(frame: &mut Frame<'_>, area: Rect, app: &mut App<'_>) {
    let done = app.tasks.iter().filter(|t| t.done).count();
    let block = Block::bordered().title(format!(" {} open, {done} done ", app.tasks.len() - done));
    if app.tasks.is_empty() {
        let hint = Paragraph::new("No tasks yet: press n to create one.").dark_gray().block(block);
        frame.render_widget(hint, area);
        return;
    }
    let rows = app.tasks.iter().map(task_row);
    let widths =
        [Constraint::Length(8), Constraint::Length(3), Constraint::Fill(2), Constraint::Length(6), Constraint::Fill(1)];
    let table = Table::new(rows, widths)
        .header(Row::new(["Sync", "", "Title", "Prio", "Tags"]).bold().underlined())
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    frame.render_stateful_widget(table, area, &mut app.table);
}

fn task_row(task: &Task) -> Row<'_> {
    let sync = match task.sync {
        DocStatus::Synced => Span::styled("synced", Style::new().fg(Color::Green)),
        DocStatus::Pending => Span::styled("pending", Style::new().fg(Color::Yellow)),
        DocStatus::Conflict => Span::styled("conflict", Style::new().fg(Color::Red).bold()),
    };
    let mark = if task.done { "[x]" } else { "[ ]" };
    let title_style =
        if task.done { Style::new().fg(Color::DarkGray).add_modifier(Modifier::CROSSED_OUT) } else { Style::new() };
    let priority_style = match task.priority {
        Priority::High => Style::new().fg(Color::Red).bold(),
        Priority::Medium => Style::new().fg(Color::Yellow),
        Priority::Low => Style::new().fg(Color::Blue),
    };
    let tags = task.tags.iter().map(|t| format!("#{t}")).collect::<Vec<_>>().join(" ");
    let mut title = vec![Span::styled(task.title.as_str(), title_style)];
    if let Some(owner) = &task.shared_by {
        title.push(Span::styled(format!(" (shared by {})", short_id(owner)), Style::new().fg(Color::DarkGray)));
    }
    Row::new([
        Cell::from(sync),
        Cell::from(mark),
        Cell::from(Line::from(title)),
        Cell::from(Span::styled(task.priority.as_str(), priority_style)),
        Cell::from(Span::styled(tags, Style::new().fg(Color::Magenta))),
    ])
}

/// A user id short enough for the table: a UUID's first 8 characters and `…` (the
/// status line names it in full when the task is shared).
fn short_id(id: &str) -> String {
    match id.char_indices().nth(12) {
        Some(_) => format!("{}…", id.chars().take(8).collect::<String>()),
        None => id.to_owned(),
    }
}

fn render_prompt(frame: &mut Frame<'_>, area: Rect, app: &App<'_>) {
    let (label, text, cursor) = match &app.mode {
        Mode::Browse => return,
        Mode::Input(prompt) => (prompt.purpose.label(), prompt.input.clone(), true),
        Mode::ConfirmDelete { title, .. } => {
            ("Delete", format!("Delete {title:?}? y = yes, any other key = no"), false)
        }
    };
    let line = Line::from(text);
    let width = line.width() as u16;
    frame.render_widget(Paragraph::new(line).block(Block::bordered().title(format!(" {label} "))), area);
    if cursor {
        // Inside the border, after the text (clamped so a long answer keeps it on screen).
        let x = (area.x + 1 + width).min(area.right().saturating_sub(2));
        frame.set_cursor_position(Position::new(x, area.y + 1));
    }
}

fn help_text(mode: &Mode) -> &'static str {
    match mode {
        Mode::Browse => " n new  e edit  p priority  t tags  space/c done  d delete  j/k move  s sync now  q quit",
        Mode::Input(_) => " Enter confirm  Esc cancel  Backspace erase  Ctrl-U clear",
        Mode::ConfirmDelete { .. } => " y delete  any other key cancel",
    }
}
