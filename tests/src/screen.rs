//! A terminal in memory for tests of progress displays drawn with indicatif.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// A terminal in memory: the rows as a real one would show them (lines wrap at the width,
/// which is how indicatif moves to the next line), and every string ever written.
#[derive(Debug, Clone, Default)]
pub struct Screen(Arc<Mutex<ScreenState>>);

#[derive(Debug, Default)]
struct ScreenState {
    rows: Vec<Vec<char>>,
    row: usize,
    col: usize,
    history: Vec<String>,
}

const WIDTH: usize = 100;

impl ScreenState {
    fn put(&mut self, c: char) {
        match c {
            '\r' => self.col = 0,
            '\n' => {
                self.row += 1;
                self.col = 0;
            }
            c => {
                if self.col == WIDTH {
                    self.row += 1;
                    self.col = 0;
                }
                while self.rows.len() <= self.row {
                    self.rows.push(Vec::new());
                }
                let row = &mut self.rows[self.row];
                while row.len() <= self.col {
                    row.push(' ');
                }
                row[self.col] = c;
                self.col += 1;
            }
        }
    }
}

impl Screen {
    fn state(&self) -> MutexGuard<'_, ScreenState> {
        self.0.lock().unwrap()
    }

    /// The non-blank rows shown now, right-trimmed.
    pub fn shown(&self) -> Vec<String> {
        self.state()
            .rows
            .iter()
            .map(|r| r.iter().collect::<String>().trim_end().to_owned())
            .filter(|r| !r.is_empty())
            .collect()
    }

    /// Everything written so far.
    pub fn history(&self) -> String {
        self.state().history.concat()
    }
}

impl indicatif::TermLike for Screen {
    fn width(&self) -> u16 {
        WIDTH as u16
    }
    fn height(&self) -> u16 {
        40
    }
    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        let mut s = self.state();
        s.row = s.row.saturating_sub(n);
        s.col = s.col.min(WIDTH - 1);
        Ok(())
    }
    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        let mut s = self.state();
        s.row += n;
        s.col = s.col.min(WIDTH - 1);
        Ok(())
    }
    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        let mut s = self.state();
        s.col = (s.col + n).min(WIDTH - 1);
        Ok(())
    }
    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        let mut s = self.state();
        s.col = s.col.saturating_sub(n);
        Ok(())
    }
    fn write_line(&self, line: &str) -> io::Result<()> {
        self.write_str(line)?;
        self.write_str("\n")
    }
    fn write_str(&self, text: &str) -> io::Result<()> {
        let mut s = self.state();
        s.history.push(text.to_owned());
        text.chars().for_each(|c| s.put(c));
        Ok(())
    }
    fn clear_line(&self) -> io::Result<()> {
        let mut s = self.state();
        let row = s.row;
        if let Some(r) = s.rows.get_mut(row) {
            r.clear();
        }
        s.col = 0;
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}
