pub mod grow;
